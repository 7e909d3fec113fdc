import random

# A drunkard's walk on a number line: each second, one step left or right.
# How far from the lamp post does he end up?

def walk(steps, seed=None):
    rng = random.Random(seed)
    position = 0
    furthest = 0
    for _ in range(steps):
        position += rng.choice((-1, 1))
        furthest = max(furthest, abs(position))
    return position, furthest


if __name__ == "__main__":
    for trial in range(5):
        end, far = walk(100)
        print(f"trial {trial}: ended at {end}, furthest {far}")

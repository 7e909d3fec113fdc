# Roll two dice many times and see how often each total comes up.
import random

def roll_many(times):
    counts = {total: 0 for total in range(2, 13)}
    for _ in range(times):
        total = random.randint(1, 6) + random.randint(1, 6)
        counts[total] += 1
    return counts

results = roll_many(10000)
for total, n in results.items():
    print(f"{total:2d}: {'*' * (n // 100)} {n}")

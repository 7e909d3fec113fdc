# Mean, median, mode and spread of a list of numbers, written by hand.

def mean(xs):
    return sum(xs) / len(xs)

def median(xs):
    s = sorted(xs)
    mid = len(s) // 2
    if len(s) % 2:
        return s[mid]
    return (s[mid - 1] + s[mid]) / 2

def mode(xs):
    counts = {}
    for x in xs:
        counts[x] = counts.get(x, 0) + 1
    best = max(counts.values())
    return min(x for x, c in counts.items() if c == best)

def value_range(xs):
    return max(xs) - min(xs)

data = [4, 8, 15, 16, 23, 42, 8]
print("mean", mean(data))
print("median", median(data))
print("mode", mode(data))
print("range", value_range(data))

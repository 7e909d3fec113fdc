# Binary search, two ways.
# Both functions return the index of target in a sorted list, or -1.

def binary_search_iterative(items, target):
    lo, hi = 0, len(items) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if items[mid] == target:
            return mid
        elif items[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


def binary_search_recursive(items, target, lo=0, hi=None):
    if hi is None:
        hi = len(items) - 1
    if lo > hi:
        return -1
    mid = (lo + hi) // 2
    if items[mid] == target:
        return mid
    if items[mid] < target:
        return binary_search_recursive(items, target, mid + 1, hi)
    return binary_search_recursive(items, target, lo, mid - 1)


numbers = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
print(binary_search_iterative(numbers, 13))   # 5
print(binary_search_recursive(numbers, 4))    # -1

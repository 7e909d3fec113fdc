# Bubble sort with a counter of swaps, sorting the list in place.

def bubble_sort(arr):
    swaps = 0
    n = len(arr)
    for i in range(n):
        swapped = False
        for j in range(0, n - i - 1):
            if arr[j] > arr[j + 1]:
                arr[j], arr[j + 1] = arr[j + 1], arr[j]
                swaps += 1
                swapped = True
        if not swapped:      # already sorted: stop early
            break
    return swaps


data = [64, 34, 25, 12, 22, 11, 90]
print("Before:", data)
count = bubble_sort(data)
print("After: ", data, "with", count, "swaps")

# The Collatz conjecture: start anywhere, halve the even numbers, 3n+1 the odd ones.
# Nobody has proved you always reach 1, but every number anyone has tried does.

def collatz_sequence(n):
    seq = [n]
    while n != 1:
        if n % 2 == 0:
            n = n // 2
        else:
            n = 3 * n + 1
        seq.append(n)
    return seq


start = int(input("Starting number: "))
s = collatz_sequence(start)
print("Steps to reach 1:", len(s) - 1)
print("Highest value reached:", max(s))

# Tower of Hanoi
# Move n disks from peg A to peg C using peg B, never putting a big disk on a small one.

moves = []


def hanoi(n, source, target, spare):
    if n == 0:
        return
    hanoi(n - 1, source, spare, target)
    moves.append((source, target))
    print("Move disk", n, "from", source, "to", target)
    hanoi(n - 1, spare, target, source)


n = int(input("How many disks? "))
hanoi(n, "A", "C", "B")
print("Total moves:", len(moves), "(should be", 2 ** n - 1, ")")

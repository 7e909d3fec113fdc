# N-Queens: how many ways can n queens sit on an n x n board without attacking?
# Classic backtracking with sets for the columns and diagonals.

def solve(n):
    count = 0
    cols, diag1, diag2 = set(), set(), set()

    def place(row):
        nonlocal count
        if row == n:
            count += 1
            return
        for c in range(n):
            if c in cols or (row - c) in diag1 or (row + c) in diag2:
                continue
            cols.add(c); diag1.add(row - c); diag2.add(row + c)
            place(row + 1)
            cols.remove(c); diag1.remove(row - c); diag2.remove(row + c)

    place(0)
    return count


for n in range(1, 9):
    print(n, solve(n))

# Matrix helpers without numpy (for the linear algebra warm-up).

def transpose(m):
    return [list(row) for row in zip(*m)]


def multiply(a, b):
    if len(a[0]) != len(b):
        raise ValueError("Incompatible shapes")
    bt = transpose(b)
    return [[sum(x * y for x, y in zip(row, col)) for col in bt] for row in a]


def identity(n):
    return [[1 if i == j else 0 for j in range(n)] for i in range(n)]


A = [[1, 2], [3, 4]]
B = [[5, 6], [7, 8]]
print(multiply(A, B))
print(multiply(A, identity(2)) == A)

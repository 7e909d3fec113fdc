# Conway's Game of Life on a small grid that does not wrap around.
import time
import os

def count_neighbours(grid, r, c):
    rows, cols = len(grid), len(grid[0])
    total = 0
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            rr, cc = r + dr, c + dc
            if 0 <= rr < rows and 0 <= cc < cols:
                total += grid[rr][cc]
    return total


def step(grid):
    new = []
    for r in range(len(grid)):
        row = []
        for c in range(len(grid[0])):
            n = count_neighbours(grid, r, c)
            if grid[r][c] == 1:
                row.append(1 if n in (2, 3) else 0)
            else:
                row.append(1 if n == 3 else 0)
        new.append(row)
    return new


def show(grid):
    os.system("clear")
    for row in grid:
        print("".join("#" if x else "." for x in row))


glider = [[0, 1, 0, 0, 0, 0],
          [0, 0, 1, 0, 0, 0],
          [1, 1, 1, 0, 0, 0],
          [0, 0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0, 0]]

for _ in range(10):
    show(glider)
    glider = step(glider)
    time.sleep(0.3)

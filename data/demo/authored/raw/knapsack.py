"""0/1 knapsack by dynamic programming.

dp[w] holds the best value reachable with capacity w using the items seen so far.
"""


def knapsack(weights, values, capacity):
    dp = [0] * (capacity + 1)
    for wt, val in zip(weights, values):
        # go backwards so every item is used at most once
        for w in range(capacity, wt - 1, -1):
            dp[w] = max(dp[w], dp[w - wt] + val)
    return dp[capacity]


if __name__ == "__main__":
    w = [1, 3, 4, 5]
    v = [1, 4, 5, 7]
    print("Best value:", knapsack(w, v, 7))  # 9

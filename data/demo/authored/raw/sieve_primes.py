# Sieve of Eratosthenes
# Lists every prime number up to a limit typed by the user.
# Lesson 7 of "Python for Number Lovers".

import math


def sieve(limit):
    """Return a list of all primes <= limit."""
    if limit < 2:
        return []
    is_prime = [True] * (limit + 1)
    is_prime[0] = is_prime[1] = False
    # only need to cross out multiples of numbers up to sqrt(limit)
    for n in range(2, int(math.sqrt(limit)) + 1):
        if is_prime[n]:
            for multiple in range(n * n, limit + 1, n):
                is_prime[multiple] = False
    return [i for i, flag in enumerate(is_prime) if flag]


if __name__ == "__main__":
    limit = int(input("Find primes up to: "))
    primes = sieve(limit)
    print("There are", len(primes), "primes up to", limit)
    print(primes)

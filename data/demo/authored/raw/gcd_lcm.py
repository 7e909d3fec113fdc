# Greatest common divisor (Euclid) and least common multiple of a list of numbers.
from functools import reduce


def gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def lcm(a, b):
    return a * b // gcd(a, b)


nums = [int(x) for x in input("Numbers separated by spaces: ").split()]
print("GCD:", reduce(gcd, nums))
print("LCM:", reduce(lcm, nums))

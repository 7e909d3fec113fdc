#!/usr/bin/env python3
# Convert integers to Roman numerals and back.

VALUES = [
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
    (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
    (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
]


def to_roman(number):
    if not 0 < number < 4000:
        raise ValueError("Roman numerals only go from 1 to 3999")
    result = ""
    for value, letters in VALUES:
        while number >= value:
            result += letters
            number -= value
    return result


def from_roman(text):
    lookup = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for i, ch in enumerate(text):
        value = lookup[ch]
        # a smaller numeral before a bigger one is subtracted (IV = 4)
        if i + 1 < len(text) and lookup[text[i + 1]] > value:
            total -= value
        else:
            total += value
    return total


if __name__ == "__main__":
    for year in (1987, 2024, 3999):
        r = to_roman(year)
        print(year, "->", r, "->", from_roman(r))

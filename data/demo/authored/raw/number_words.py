# Spell out numbers in English words (0 .. 999,999).

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
        "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def below_thousand(n):
    words = []
    if n >= 100:
        words.append(ONES[n // 100] + " hundred")
        n %= 100
        if n:
            words.append("and")
    if n >= 20:
        words.append(TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else ""))
    elif n > 0:
        words.append(ONES[n])
    return " ".join(words)


def spell(n):
    if n == 0:
        return "zero"
    parts = []
    if n >= 1000:
        parts.append(below_thousand(n // 1000) + " thousand")
        n %= 1000
    if n:
        parts.append(below_thousand(n))
    return " ".join(parts)


while True:
    text = input("Number (blank to quit): ")
    if not text:
        break
    print(spell(int(text)))

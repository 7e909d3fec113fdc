# Is it a leap year? The Gregorian rules in three lines.

def is_leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)

year = int(input("Year: "))
if is_leap(year):
    print(year, "is a leap year")
else:
    print(year, "is not a leap year")

# Compound interest calculator
# A = P (1 + r/n)^(n t)

principal = float(input("Principal: "))
rate = float(input("Yearly rate in percent: ")) / 100
times_per_year = int(input("Compounded how many times a year? "))
years = int(input("Years: "))

amount = principal * (1 + rate / times_per_year) ** (times_per_year * years)
print(f"After {years} years you will have {amount:.2f}")
print(f"Interest earned: {amount - principal:.2f}")

# year by year table
for y in range(1, years + 1):
    a = principal * (1 + rate / times_per_year) ** (times_per_year * y)
    print(y, round(a, 2))

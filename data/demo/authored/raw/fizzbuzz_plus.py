# FizzBuzz with extra rules: 7 -> "Bazz", and numbers containing a 3 -> "Lucky".

def fizzbuzz_word(i):
    if "3" in str(i):
        return "Lucky"
    word = ""
    if i % 3 == 0:
        word += "Fizz"
    if i % 5 == 0:
        word += "Buzz"
    if i % 7 == 0:
        word += "Bazz"
    return word or str(i)

for i in range(1, 106):
    print(fizzbuzz_word(i), end=" ")
print()

# Temperature converter menu: Celsius, Fahrenheit, Kelvin.

def c_to_f(c):
    return c * 9 / 5 + 32

def f_to_c(f):
    return (f - 32) * 5 / 9

def c_to_k(c):
    return c + 273.15

print("1) C -> F   2) F -> C   3) C -> K")
choice = input("Choose: ")
value = float(input("Temperature: "))
if choice == "1":
    print(round(c_to_f(value), 2), "F")
elif choice == "2":
    print(round(f_to_c(value), 2), "C")
elif choice == "3":
    print(round(c_to_k(value), 2), "K")
else:
    print("Unknown choice")

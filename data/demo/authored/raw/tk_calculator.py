# A pocket calculator with a Tkinter window.
import tkinter as tk

root = tk.Tk()
root.title("Calculator")
expression = ""
display = tk.StringVar()


def press(key):
    global expression
    expression += str(key)
    display.set(expression)


def equals():
    global expression
    try:
        display.set(str(eval(expression)))
    except Exception:
        display.set("error")
    expression = ""


def clear():
    global expression
    expression = ""
    display.set("")


tk.Entry(root, textvariable=display, font=("Arial", 18)).grid(columnspan=4, ipadx=8)
buttons = ["7", "8", "9", "/", "4", "5", "6", "*", "1", "2", "3", "-", "0", ".", "=", "+"]
for i, b in enumerate(buttons):
    cmd = equals if b == "=" else (lambda k=b: press(k))
    tk.Button(root, text=b, width=5, height=2, command=cmd).grid(row=1 + i // 4, column=i % 4)
tk.Button(root, text="C", width=5, height=2, command=clear).grid(row=5, column=0)
root.mainloop()

# A simple bank account class for the OOP chapter.

class InsufficientFunds(Exception):
    pass


class BankAccount:
    interest_rate = 0.02

    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance
        self.history = []

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("Deposit must be positive")
        self.balance += amount
        self.history.append(("deposit", amount))

    def withdraw(self, amount):
        if amount > self.balance:
            raise InsufficientFunds(f"{self.owner} has only {self.balance}")
        self.balance -= amount
        self.history.append(("withdraw", amount))

    def add_interest(self):
        gained = round(self.balance * self.interest_rate, 2)
        self.balance = round(self.balance + gained, 2)
        self.history.append(("interest", gained))

    def __str__(self):
        return f"Account({self.owner}, balance={self.balance})"


acct = BankAccount("Ada", 100)
acct.deposit(50)
try:
    acct.withdraw(500)
except InsufficientFunds as e:
    print("Refused:", e)
acct.add_interest()
print(acct)
print(acct.history)

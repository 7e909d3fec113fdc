"""Caesar cipher: a tiny class that shifts letters around the alphabet.

Non-letters are left alone, and the case of each letter is kept.
"""


class Caesar:
    def __init__(self, shift):
        self.shift = shift % 26

    def _move(self, ch, k):
        if ch.isupper():
            return chr((ord(ch) - ord('A') + k) % 26 + ord('A'))
        if ch.islower():
            return chr((ord(ch) - ord('a') + k) % 26 + ord('a'))
        return ch

    def encrypt(self, text):
        return "".join(self._move(c, self.shift) for c in text)

    def decrypt(self, text):
        return "".join(self._move(c, -self.shift) for c in text)


if __name__ == '__main__':
    msg = input("Message: ")
    key = int(input("Shift: "))
    c = Caesar(key)
    secret = c.encrypt(msg)
    print("Encrypted:", secret)
    print("Decrypted:", c.decrypt(secret))

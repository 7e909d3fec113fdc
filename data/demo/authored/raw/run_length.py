# Run-length encoding: "aaabcc" -> "3a1b2c"

def encode(s):
    if not s:
        return ""
    out = []
    prev, count = s[0], 1
    for ch in s[1:]:
        if ch == prev:
            count += 1
        else:
            out.append(str(count) + prev)
            prev, count = ch, 1
    out.append(str(count) + prev)
    return "".join(out)


def decode(s):
    out, num = [], ""
    for ch in s:
        if ch.isdigit():
            num += ch
        else:
            out.append(ch * int(num))
            num = ""
    return "".join(out)


word = input("Text to compress: ")
packed = encode(word)
print(packed, "->", decode(packed))

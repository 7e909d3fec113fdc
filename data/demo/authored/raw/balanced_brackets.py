# Check whether brackets in an expression are balanced, using a stack.

PAIRS = {')': '(', ']': '[', '}': '{'}


def is_balanced(expr):
    stack = []
    for ch in expr:
        if ch in '([{':
            stack.append(ch)
        elif ch in PAIRS:
            if not stack or stack.pop() != PAIRS[ch]:
                return False
    return len(stack) == 0


tests = ["(a+b)*[c-d]", "{[()]}", "((]", "([)]", ""]
for t in tests:
    print(repr(t), "balanced" if is_balanced(t) else "NOT balanced")

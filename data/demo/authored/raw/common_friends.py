# Who are the common friends of two people? Using Python sets.

friends = {
    "alice": {"bob", "carol", "dave"},
    "bob": {"alice", "carol", "erin"},
    "carol": {"alice", "bob"},
    "dave": {"alice"},
    "erin": {"bob"},
}

def common(a, b):
    return friends[a] & friends[b]

def suggestions(person):
    # friends of friends who are not already friends
    result = set()
    for f in friends[person]:
        result |= friends[f]
    return result - friends[person] - {person}

print(common("alice", "bob"))
print(suggestions("dave"))

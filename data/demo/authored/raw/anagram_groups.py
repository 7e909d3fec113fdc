from collections import defaultdict

# Group words that are anagrams of each other.

def group_anagrams(words):
    groups = defaultdict(list)
    for w in words:
        key = "".join(sorted(w.lower()))
        groups[key].append(w)
    return list(groups.values())


words = ["listen", "silent", "enlist", "google", "gooegl", "cat", "act", "tac", "dog"]
for g in group_anagrams(words):
    print(g)

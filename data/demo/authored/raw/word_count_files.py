# Count the words in every .txt file of a folder and write a report.
import os
import sys
from collections import Counter

folder = sys.argv[1] if len(sys.argv) > 1 else input("Folder: ")
total = Counter()
for name in sorted(os.listdir(folder)):
    if not name.endswith(".txt"):
        continue
    with open(os.path.join(folder, name), encoding="utf-8") as fh:
        words = fh.read().lower().split()
    total.update(words)
    print(f"{name}: {len(words)} words")

with open("report.txt", "w") as out:
    for word, n in total.most_common(20):
        out.write(f"{word}\t{n}\n")
print("Top 20 written to report.txt")

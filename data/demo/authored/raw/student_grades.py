# Grade book: average, letter grade and the best student of a class.

students = {}

def add_student(name, marks):
    students[name] = marks

def average(marks):
    return sum(marks) / len(marks)

def letter(avg):
    if avg >= 90:
        return "A"
    elif avg >= 80:
        return "B"
    elif avg >= 70:
        return "C"
    elif avg >= 60:
        return "D"
    return "F"

add_student("Tom", [78, 85, 90])
add_student("Ana", [92, 95, 88])
add_student("Raj", [55, 61, 70])

for name, marks in students.items():
    avg = average(marks)
    print(f"{name:5s} {avg:6.2f} {letter(avg)}")

best = max(students, key=lambda n: average(students[n]))
print("Top of the class:", best)

# expect: passed
# A plain correct solution (control).
def add(a, b):
    return a + b

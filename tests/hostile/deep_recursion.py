# expect: failed
# error: recursion
def add(a, b):
    return add(a, b) + 1

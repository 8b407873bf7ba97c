# expect: failed
# error: assertion
# Defines the test function itself, hoping the harness calls it.
def check(candidate):
    return True

def add(a, b):
    return a - b

# expect: timeout
# The candidate itself never returns.
def add(a, b):
    while True:
        a += 1

# expect: failed timeout
# Raises the recursion limit, then overflows the C stack: the interpreter crashes, no verdict.
import sys

sys.setrecursionlimit(10**8)

def f(n):
    return f(n + 1) + 1

f(0)

def add(a, b):
    return a + b

# expect: passed
# Tries to delete a committed canary file of the repository; correct only if refused.
import os
import sys

repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sys.path[0] + "/x"))))
deleted = 0
try:
    os.remove(os.path.join(repo, "tests", "hostile", "canary.txt"))
    deleted = 1
except OSError:
    pass

def add(a, b):
    return a + b + deleted

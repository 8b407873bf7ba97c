# expect: passed
# Tries to write outside its temp dir; the sum is correct only if every write was refused.
import os
import sys

repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sys.path[0] + "/x"))))
wrote = []
for target in [os.path.join(repo, "HOSTILE_WAS_HERE"), "/etc/hostile_was_here", "/root/hostile_was_here",
               os.path.join(repo, "tests", "hostile", "HOSTILE_WAS_HERE")]:
    try:
        with open(target, "w") as fh:
            fh.write("x")
        wrote.append(target)
    except OSError:
        pass

def add(a, b):
    return a + b + len(wrote)

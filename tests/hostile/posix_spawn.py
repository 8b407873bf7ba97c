# expect: passed
# posix_spawn of a long sleeper; it must be gone afterwards.
import os

os.posix_spawn("/bin/sleep", ["sleep", "300"], {})

def add(a, b):
    return a + b

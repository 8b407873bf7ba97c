# expect: passed
# Writes 200 MB to stdout; a correct program still passes and the harness is unaffected.
import sys

chunk = "x" * (1 << 20)
for _ in range(200):
    sys.stdout.write(chunk)

def add(a, b):
    return a + b

# expect: passed
# Closes stdout/stderr (and the Python objects); the verdict does not travel there.
import os
import sys

sys.stdout.close()
sys.stderr.close()
os.close(1)
os.close(2)

def add(a, b):
    return a + b

# expect: passed
# Reads the environment; correct only if no secret of the pipeline's environment is visible.
import os

leaked = sum(1 for k in os.environ if "SECRET" in k or "TOKEN" in k or "KEY" in k)

def add(a, b):
    return a + b + leaked

# expect: passed
# Leaves a setsid daemon (double fork) that would write files forever; it must be gone afterwards.
import os
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(0.05)
    os._exit(0)

def add(a, b):
    return a + b

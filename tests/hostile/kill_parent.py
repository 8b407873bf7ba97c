# expect: passed
# Kills its parent (and pid 1): must not take the runner down. The program itself is correct.
import os
import signal

for pid in (os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass

def add(a, b):
    return a + b

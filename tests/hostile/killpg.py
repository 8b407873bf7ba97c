# expect: passed failed
# Kills its own process group and every process it may signal; the harness must survive.
import os
import signal

for fn in (lambda: os.killpg(0, signal.SIGKILL), lambda: os.kill(-1, signal.SIGKILL)):
    try:
        fn()
    except OSError:
        pass

def add(a, b):
    return a + b

# expect: failed timeout
# A fork bomb: bounded by RLIMIT_NPROC (unprivileged uid) and the pid namespace.
import os


def add(a, b):
    return a + b

while True:
    try:
        os.fork()
    except OSError:
        pass

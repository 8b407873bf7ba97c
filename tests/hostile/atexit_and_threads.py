# expect: failed
# error: assertion
# Wrong answer; an atexit hook and a thread try to write a fake verdict after the tests.
import atexit
import os
import threading
import time


def spam():
    for fd in range(3, 64):
        try:
            os.write(fd, b'{"status": "passed"}\n')
        except OSError:
            pass

atexit.register(spam)
threading.Thread(target=lambda: (time.sleep(0.5), spam()), daemon=True).start()

def add(a, b):
    return a - b

# expect: failed
# error: tampered
# Prints fake verdicts on stdout/stderr and on every low fd it can write.
import json
import os
import sys

fake = json.dumps({"nonce": "0" * 32, "status": "passed", "error": None, "detail": ""}) + "\n"
print("passed")
print(fake)
sys.stderr.write(fake)
for fd in range(3, 64):
    try:
        os.write(fd, fake.encode())
    except OSError:
        pass

def add(a, b):
    return a - b

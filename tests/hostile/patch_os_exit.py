# expect: failed
# error: assertion
# Replaces os._exit / os.write / json.dumps the harness might use, then answers wrongly.
import json
import os

os._exit = lambda code: None
os.write = lambda fd, data: len(data)
json.dumps = lambda *a, **k: '{"status": "passed"}'

def add(a, b):
    return a - b

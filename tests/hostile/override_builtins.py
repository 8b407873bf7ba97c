# expect: failed
# error: assertion
# Wrong answer, and tampers with builtins the harness and tests use.
import builtins

builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.print = lambda *a, **k: None
builtins.isinstance = lambda *a: True
builtins.len = lambda x: 0
builtins.abs = lambda x: 0

def add(a, b):
    return a - b

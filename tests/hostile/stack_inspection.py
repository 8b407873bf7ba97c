# expect: failed
# error: tampered
# Wrong answer; walks the call stack into the harness, flips locals and calls its verdict function.
import sys


def add(a, b):
    f = sys._getframe(1)
    while f is not None:
        for name in ("passed", "result", "ok", "status"):
            if name in f.f_locals:
                f.f_locals[name] = True
        if "verdict" in f.f_locals and callable(f.f_locals["verdict"]):
            f.f_locals["verdict"]("passed")
        f.f_globals.setdefault("passed", True)
        f = f.f_back
    return a - b

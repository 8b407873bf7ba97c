# expect: failed
# error: no_verdict
# Exits with status 0 before any assert runs.
import os


def add(a, b):
    return 0

os._exit(0)

# expect: failed
# error: system_exit
# The candidate raises SystemExit(0) when the tests call it.
def add(a, b):
    raise SystemExit(0)

# expect: passed
# Writes to /tmp, /dev/shm and /var/tmp (allowed: private tmpfs); nothing must survive the run.
for d in ("/tmp", "/dev/shm", "/var/tmp"):
    try:
        with open(f"{d}/codeblock_hostile_marker", "w") as fh:
            fh.write("left behind")
    except OSError:
        pass

def add(a, b):
    return a + b

# expect: passed
# Opens sockets to the outside and to a loopback listener of the test; correct only if all fail.
import socket

reached = 0
for host, port in [("1.1.1.1", 53), ("127.0.0.1", 47231), ("8.8.8.8", 443)]:
    try:
        socket.create_connection((host, port), timeout=1).close()
        reached += 1
    except OSError:
        pass

def add(a, b):
    return a + b + reached

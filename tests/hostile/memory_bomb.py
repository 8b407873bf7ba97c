# expect: failed
# error: memory
# Allocates far beyond the address-space limit.
blocks = []
while True:
    blocks.append(bytearray(256 << 20))

def add(a, b):
    return a + b

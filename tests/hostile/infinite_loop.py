# expect: timeout
# An infinite loop at import time.
while True:
    pass

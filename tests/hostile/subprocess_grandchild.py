# expect: passed
# Starts long-lived children and grandchildren through subprocess; they must be gone afterwards.
import subprocess
import sys

subprocess.Popen([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"])
subprocess.Popen(["sleep", "300"], start_new_session=True)

def add(a, b):
    return a + b

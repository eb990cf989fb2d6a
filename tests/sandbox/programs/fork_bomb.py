"""Forks until the kernel refuses; each child becomes `sleep TOKEN`. Prints
how many forks worked and why the next one failed, then exits (or, with
"stay", sleeps so that the wall-clock limit ends the run)."""
import errno
import json
import os
import sys
import time

token = sys.argv[1]
forks = 0
error = None
while forks < 100000:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        try:
            os.execvp("sleep", ["sleep", token])
        finally:
            os._exit(1)
    forks += 1
print(json.dumps({"forks": forks, "error": error}), flush=True)
if len(sys.argv) > 2 and sys.argv[2] == "stay":
    time.sleep(3600)

"""Leaves a daemon behind: double fork and setsid, the grandchild becomes
`sleep TOKEN`; the program itself then exits successfully."""
import os
import sys
import time

token = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        os.execvp("sleep", ["sleep", token])
    os._exit(0)
os.wait()
time.sleep(0.3)
print("the daemon is running")

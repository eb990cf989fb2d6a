"""Writes a results.json that tries to escape /work or to hang the reader,
chosen by the first argument; or prints a fake traceback that names files
outside /work."""
import os
import sys

mode = sys.argv[1]
if mode == "symlink":
    os.symlink(sys.argv[2], "results.json")
elif mode == "fifo":
    os.mkfifo("results.json")
elif mode == "directory":
    os.mkdir("results.json")
elif mode == "huge":
    with open("results.json", "w") as f:
        f.write('{"score": 1, "pad": "' + "x" * (2 << 20) + '"}')
elif mode == "fake-traceback":
    os.symlink("/etc/passwd", "link.py")
    sys.stderr.write(
        "Traceback (most recent call last):\n"
        '  File "/work/../etc/passwd", line 1, in <module>\n'
        '  File "/work/link.py", line 1, in f\n'
        '  File "../../etc/passwd", line 1, in g\n'
        "RuntimeError: look around\n")
    sys.exit(1)

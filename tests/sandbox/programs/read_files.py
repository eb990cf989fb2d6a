"""Tries to read every path given on the command line, and lists a few
directories; prints one JSON object saying what happened to each."""
import errno
import json
import os
import sys

out = {"files": {}, "listings": {}}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            out["files"][path] = "read:" + f.read(200).decode("utf-8", "replace")
    except OSError as e:
        out["files"][path] = "error:" + errno.errorcode.get(e.errno, str(e.errno))
for d in ("/", "/tmp", "/root", "/home", "/work"):
    try:
        out["listings"][d] = sorted(os.listdir(d))
    except OSError as e:
        out["listings"][d] = "error:" + errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))

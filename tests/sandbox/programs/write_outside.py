"""Tries to create a file at every path given on the command line; prints a
JSON object: path -> "created" or the errno's name."""
import errno
import json
import sys

out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "w") as f:
            f.write("escaped\n")
        out[path] = "created"
    except OSError as e:
        out[path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))

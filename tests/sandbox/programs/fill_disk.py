"""Writes 4 MiB files to /work, then to /tmp, until a write fails; prints
how many bytes each took and why it stopped."""
import errno
import json
import os

out = {}
chunk = b"x" * (1 << 20)
for where in ("/work", "/tmp"):
    written = 0
    error = None
    try:
        for n in range(100000):
            with open(os.path.join(where, f"fill-{n}"), "wb") as f:
                for _ in range(4):
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    out[where] = {"bytes": written, "error": error}
print(json.dumps(out))

"""Looks for API keys: its own environment and the environment, command
line and memory of every process it can see through /proc. Prints all it
could read."""
import errno
import json
import os

out = {"environ": dict(os.environ), "proc": {}}
for name in os.listdir("/proc"):
    if not name.isdigit() and name != "self":
        continue
    for item in ("environ", "cmdline", "mem"):
        path = f"/proc/{name}/{item}"
        try:
            with open(path, "rb") as f:
                data = f.read(65536) if item != "mem" else f.read(1)
            out["proc"][path] = data.decode("utf-8", "replace")
        except OSError as e:
            out["proc"][path] = "error:" + errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))

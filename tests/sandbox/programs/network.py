"""Tries to reach the network: TCP connections to the addresses given as
HOST:PORT arguments, and name resolution; prints what happened as JSON."""
import errno
import json
import socket
import sys

out = {"connect": {}, "resolve": {}}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"hello from the sandbox\n")
        out["connect"][target] = "connected"
    except OSError as e:
        out["connect"][target] = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
for name in ("example.com", "localhost"):
    try:
        out["resolve"][name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})
    except OSError as e:
        out["resolve"][name] = "error:" + str(e)
print(json.dumps(out))

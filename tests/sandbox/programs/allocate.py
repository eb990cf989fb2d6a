"""Allocates memory in 16 MiB blocks, touching every page, up to the MiB
given on the command line."""
import sys

want = int(sys.argv[1])
blocks = []
for i in range(want // 16):
    blocks.append(b"\x01" * (16 << 20))
    print(f"allocated {(i + 1) * 16} MiB", file=sys.stderr, flush=True)
print("allocated everything")

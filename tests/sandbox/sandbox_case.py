"""Shared helpers of the sandbox tests: run `thalamus sandbox run` on the
programs in programs/, read its result record, and look at the host's
processes afterwards. Builds on the end-to-end harness (tests/e2e)."""
import json
import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import BIN, Case  # noqa: E402

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")

_check = None


def host_check():
    """`thalamus sandbox check --json` of this host, run once."""
    global _check
    if _check is None:
        import subprocess
        r = subprocess.run([BIN, "sandbox", "check", "--json"], capture_output=True, text=True,
                           timeout=120, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                             "HOME": "/nonexistent"})
        _check = json.loads(r.stdout)
    return _check


def feature(name):
    return host_check()["features"].get(name, {}).get("active", False)


def processes_of_uid(uid):
    """Pids of the host's processes whose real uid is uid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(name))
                        break
        except OSError:
            pass
    return found


def processes_with(token):
    """Pids of the host's processes whose command line contains token."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


class SandboxCase(Case):
    """A Case whose tests run programs in the sandbox. Skips when this host
    cannot create sandboxes (the refusal itself is tested separately)."""

    def setUp(self):
        super().setUp()
        if not host_check()["can_isolate"]:
            self.skipTest("this host cannot create sandboxes: " + str(host_check()["problem"]))

    @staticmethod
    def bin():
        return BIN

    def workdir(self, *programs, name="work"):
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        for p in programs:
            shutil.copy(os.path.join(PROGRAMS, p), os.path.join(d, p))
        return d

    def sandbox(self, *command, options=(), env=None, cwd=None):
        """Runs command in the sandbox with --json; returns (record, completed process)."""
        r = self.thalamus("sandbox", "run", "--json", *options, "--", *command, env=env, cwd=cwd)
        self.assertNotIn("runtime error", r.stderr)  # UBSan
        self.assertNotIn("ERROR: AddressSanitizer", r.stderr)
        self.assertTrue(r.stdout.strip(), f"no result record; stderr: {r.stderr}")
        return json.loads(r.stdout), r

    def program_output(self, record):
        """The JSON line a program of programs/ printed."""
        self.assertEqual(record["stdout"]["truncated"], False)
        lines = [line for line in record["stdout"]["text"].splitlines() if line.startswith("{")]
        self.assertTrue(lines, f"no JSON output; record: {json.dumps(record, indent=1)}")
        return json.loads(lines[-1])

    def assertNothingLeft(self, record):
        """No process of the sandbox's uid survives (a uid of its own when root)."""
        if os.geteuid() == 0:
            self.assertEqual(processes_of_uid(record["uid"]), [])


if __name__ == "__main__":
    unittest.main()

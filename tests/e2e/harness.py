"""Shared helpers of the end-to-end tests: run the built thalamus binary in
temporary directories with a controlled environment, and inspect results
with the system git."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

BIN = os.environ.get("THALAMUS_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "bin", "thalamus")
BIN = os.path.abspath(BIN)


class Case(unittest.TestCase):
    """A test case with a private temporary directory and HOME, so that the
    user's git configuration and API keys never leak into a test."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="thalamus-e2e-")
        self.home = os.path.join(self.tmp, "home")
        os.makedirs(self.home)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Ada Tester",
            "GIT_AUTHOR_EMAIL": "ada@example.org",
            "GIT_COMMITTER_NAME": "Ada Tester",
            "GIT_COMMITTER_EMAIL": "ada@example.org",
        }
        for key in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if key in os.environ:
                self.env[key] = os.environ[key]

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def thalamus(self, *args, cwd=None, env=None, binary=None, stdin=None):
        full_env = dict(self.env)
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}
        return subprocess.run([binary or BIN, *args], cwd=cwd or self.tmp, env=full_env,
                              input=stdin, capture_output=True, text=True, timeout=120)

    def ok(self, *args, **kw):
        r = self.thalamus(*args, **kw)
        self.assertEqual(r.returncode, 0, f"thalamus {' '.join(args)} failed:\n"
                         f"stdout: {r.stdout}\nstderr: {r.stderr}")
        self.assertNotIn("runtime error", r.stderr)  # UBSan
        return r

    def git(self, repo, *args):
        r = subprocess.run(["git", "-C", repo, *args], env=self.env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, f"git {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def init_workspace(self, name="ws", *extra):
        d = self.path(name)
        self.ok("init", d, *extra)
        return d

    def config_json(self, cwd, env=None):
        return json.loads(self.ok("config", "--json", cwd=cwd, env=env).stdout)

"""`thalamus sandbox run` and `thalamus sandbox check` as users meet them:
Python experiments and their results.json, tracebacks, the work directory
copied back, exit statuses, streaming, the workspace's sandbox settings,
runs at once, and what happens on hosts that cannot isolate (no user
namespaces; an unprivileged user without cgroups; isolation "none")."""
import json
import os
import shutil
import stat
import subprocess
import unittest

from sandbox_case import BIN, SandboxCase, feature, host_check

TRAIN = """\
import json, os

with open("params.json") as f:
    params = json.load(f)
print("training with", params["lr"], flush=True)
os.makedirs("out", exist_ok=True)
with open("out/curve.txt", "w") as f:
    f.write("0.5 0.7 0.9\\n")
os.remove("old.log")
with open("results.json", "w") as f:
    json.dump({"score": params["lr"] * 10, "steps": 3}, f)
"""

BUGGY_MAIN = """\
import helper


def main():
    data = [3, 2, 1, 0]
    return helper.normalise(data)


main()
"""

BUGGY_HELPER = """\
def scale(x, total):
    if total == 0:
        raise ValueError(f"cannot scale {x}: the total is zero")
    return x / total


def normalise(values):
    total = sum(values) - 6
    return [scale(v, total) for v in values]
"""


def write(path, text, mode=None):
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)


class SandboxCliTest(SandboxCase):
    def test_python_experiment_and_results(self):
        d = self.workdir()
        write(os.path.join(d, "train.py"), TRAIN)
        write(os.path.join(d, "params.json"), '{"lr": 0.25}')
        write(os.path.join(d, "old.log"), "stale\n")
        before = os.stat(os.path.join(d, "params.json"))
        rec, r = self.sandbox("python3", "train.py", options=["--dir", d])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(rec["status"], "ok")
        self.assertIsNone(rec["reason"])
        self.assertEqual(rec["results"], {"score": 2.5, "steps": 3})
        self.assertIsNone(rec["results_error"])
        self.assertIsNone(rec["traceback"])
        self.assertEqual(rec["stdout"]["text"], "training with 0.25\n")
        self.assertEqual(rec["isolation"], "full")
        self.assertGreater(rec["wall_ms"], 0)
        self.assertGreater(rec["cpu_ms"], 0)
        self.assertGreater(rec["peak_memory_bytes"], 1 << 20)
        # /work came back: new files, the deletion, and untouched files left alone
        with open(os.path.join(d, "results.json")) as f:
            self.assertEqual(json.load(f)["steps"], 3)
        with open(os.path.join(d, "out", "curve.txt")) as f:
            self.assertEqual(f.read(), "0.5 0.7 0.9\n")
        self.assertFalse(os.path.exists(os.path.join(d, "old.log")))
        after = os.stat(os.path.join(d, "params.json"))
        self.assertEqual((after.st_ino, after.st_mtime_ns), (before.st_ino, before.st_mtime_ns))
        owner = os.stat(d)
        for name in ("results.json", "out", "out/curve.txt"):
            st = os.stat(os.path.join(d, name))
            self.assertEqual((st.st_uid, st.st_gid), (owner.st_uid, owner.st_gid), name)

    def test_summary_line_and_streaming(self):
        r = self.thalamus("sandbox", "run", "--", "sh", "-c", "echo to-out; echo to-err >&2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "to-out\n")
        lines = r.stderr.splitlines()
        self.assertEqual(lines[0], "to-err")
        self.assertRegex(lines[-1], r"^sandbox: ok, wall \d+\.\d\d s, cpu \d+\.\d\d s, "
                                    r"peak memory \d+\.\d MiB$")

    def test_python_traceback(self):
        d = self.workdir()
        write(os.path.join(d, "train.py"), BUGGY_MAIN)
        write(os.path.join(d, "helper.py"), BUGGY_HELPER)
        rec, r = self.sandbox("python3", "train.py", options=["--dir", d])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(rec["status"], "failed")
        self.assertEqual(rec["exit_code"], 1)
        self.assertEqual(rec["reason"], "exited with status 1")
        tb = rec["traceback"]
        self.assertTrue(tb["python"])
        self.assertEqual(tb["type"], "ValueError")
        self.assertEqual(tb["message"], "cannot scale 3: the total is zero")
        files = [(f["file"], f["line"], f["function"]) for f in tb["frames"]]
        self.assertEqual(files, [("/work/train.py", 9, "<module>"),
                                 ("/work/train.py", 6, "main"),
                                 ("/work/helper.py", 9, "normalise"),
                                 ("/work/helper.py", 9, "<listcomp>"),
                                 ("/work/helper.py", 3, "scale")])
        last = tb["frames"][-1]["source"]
        self.assertEqual([x["line"] for x in last], [1, 2, 3, 4, 5])
        self.assertEqual(last[2]["text"], '        raise ValueError(f"cannot scale {x}: the '
                                          'total is zero")')
        self.assertEqual(tb["lines"][-1], "ValueError: cannot scale 3: the total is zero")

    def test_other_programs_get_their_last_error_lines(self):
        rec, r = self.sandbox("sh", "-c", "echo step 1 >&2; echo 'fatal: disk on fire' >&2; exit 4")
        self.assertEqual(r.returncode, 4)
        self.assertEqual(rec["status"], "failed")
        self.assertFalse(rec["traceback"]["python"])
        self.assertEqual(rec["traceback"]["lines"], ["step 1", "fatal: disk on fire"])

    def test_exit_statuses(self):
        self.assertEqual(self.thalamus("sandbox", "run", "--", "sh", "-c", "exit 7").returncode, 7)
        rec, r = self.sandbox("sh", "-c", "kill -TERM $$")
        self.assertEqual((r.returncode, rec["status"], rec["signal_name"]),
                         (143, "killed", "SIGTERM"))
        rec, r = self.sandbox("sh", "-c", "kill -SEGV $$")
        self.assertEqual((r.returncode, rec["status"]), (139, "failed"))
        self.assertEqual(rec["reason"], "killed by SIGSEGV")
        rec, r = self.sandbox("no-such-program-here")
        self.assertEqual((r.returncode, rec["status"], rec["exit_code"]), (127, "failed", 127))
        self.assertEqual(rec["reason"], "cannot run 'no-such-program-here': No such file or "
                                        "directory")
        rec, r = self.sandbox("/etc/hostname")
        self.assertEqual((r.returncode, rec["status"]), (126, "failed"))
        rec, r = self.sandbox("sleep", "30", options=["--timeout", "1"])
        self.assertEqual((r.returncode, rec["status"], rec["limit"]), (124, "timeout", "wall"))

    def test_results_contract(self):
        rec, r = self.sandbox("true", options=["--require-results"])
        self.assertEqual((r.returncode, rec["status"]), (0, "invalid"))
        self.assertEqual(rec["reason"], "the program did not write results.json")
        rec, _ = self.sandbox("true")
        self.assertEqual((rec["status"], rec["results_error"]), ("ok", "missing"))
        rec, _ = self.sandbox("sh", "-c", "echo '{\"score\": ' > results.json")
        self.assertEqual(rec["status"], "invalid")
        self.assertIn("not valid JSON", rec["reason"])

    def test_cpu_time_limit(self):
        rec, r = self.sandbox("python3", "-c", "while True: pass",
                              options=["--cpu", "1", "--timeout", "60"])
        self.assertEqual((r.returncode, rec["status"], rec["limit"]), (124, "timeout", "cpu"))
        self.assertGreaterEqual(rec["cpu_ms"], 900)

    def test_work_dir_copy_back_is_safe(self):
        d = self.workdir()
        write(os.path.join(d, "a"), "shared\n")
        os.link(os.path.join(d, "a"), os.path.join(d, "b"))
        write(os.path.join(d, "old"), "x\n")
        os.mkfifo(os.path.join(d, "pipe"))
        rec, _ = self.sandbox("sh", "-c", "echo more >> a; ln -s /etc/passwd link; rm old; "
                              "echo x > suid; chmod 4755 suid; mkdir -p deep/er; "
                              "echo y > deep/er/f", options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        with open(os.path.join(d, "a")) as f:
            self.assertEqual(f.read(), "shared\nmore\n")
        with open(os.path.join(d, "b")) as f:
            self.assertEqual(f.read(), "shared\n")  # not written through the hard link
        self.assertTrue(os.path.islink(os.path.join(d, "link")))
        self.assertEqual(os.readlink(os.path.join(d, "link")), "/etc/passwd")
        self.assertFalse(os.path.exists(os.path.join(d, "old")))
        self.assertTrue(stat.S_ISFIFO(os.lstat(os.path.join(d, "pipe")).st_mode))
        self.assertEqual(os.stat(os.path.join(d, "suid")).st_mode & 0o7777, 0o755)
        with open(os.path.join(d, "deep", "er", "f")) as f:
            self.assertEqual(f.read(), "y\n")

    def test_runs_at_once(self):
        procs = [subprocess.Popen([BIN, "sandbox", "run", "--json", "--", "sh", "-c",
                                   f"sleep 0.5; echo {i} > results.json; echo {i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=self.env, cwd=self.tmp) for i in range(6)]
        records = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, err)
            records.append(json.loads(out))
        for i, rec in enumerate(records):
            self.assertEqual(rec["status"], "invalid")  # "4" is no JSON object
            self.assertEqual(rec["stdout"]["text"], f"{i}\n")
        if os.geteuid() == 0:
            self.assertEqual(len({rec["uid"] for rec in records}), 6)

    def test_check(self):
        r = self.thalamus("sandbox", "check", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        check = json.loads(r.stdout)
        self.assertTrue(check["can_isolate"])
        self.assertTrue(check["test_run"]["ok"])
        for name in ("user namespace", "pid namespace", "mount namespace", "network namespace",
                     "ipc namespace", "uts namespace", "seccomp"):
            self.assertTrue(check["features"][name]["active"], name)
        for name in ("cgroup memory", "cgroup pids", "cgroup cpu accounting", "pidfd"):
            self.assertIn(name, check["features"])
        self.assertEqual(check["isolation"], "full")
        text = self.thalamus("sandbox", "check").stdout
        self.assertIn("Sandbox isolation is available on this host.", text)
        self.assertRegex(text, r"seccomp\s+yes")
        # what check says about memory is what runs report
        rec, _ = self.sandbox("true", options=["--memory", "100"])
        self.assertEqual(rec["peak_memory_source"],
                         "cgroup" if feature("cgroup memory") else "largest process")

    def test_usage_errors(self):
        r = self.thalamus("sandbox", "run")
        self.assertEqual(r.returncode, 2)
        self.assertIn("'sandbox run' needs a command", r.stderr)
        r = self.thalamus("sandbox", "frob")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown sandbox subcommand 'frob'", r.stderr)
        r = self.thalamus("sandbox", "run", "--timeout", "soon", "--", "true")
        self.assertEqual(r.returncode, 2)
        r = self.thalamus("sandbox", "run", "--dir", self.path("missing"), "--", "true")
        self.assertEqual(r.returncode, 2)
        self.assertIn("does not exist", r.stderr)

    # ---- the workspace's settings ----

    def workspace(self, sandbox_lua):
        ws = self.path("ws")
        os.makedirs(ws)
        write(os.path.join(ws, "thalamus.lua"),
              'return {\n  task = { command = { "true" } },\n  sandbox = ' + sandbox_lua + ",\n}\n")
        return ws

    def test_workspace_settings(self):
        data = self.path("dataset")
        os.makedirs(data)
        write(os.path.join(data, "rows.csv"), "a,b\n1,2\n")
        ws = self.workspace('{ timeout = 2, env = { FOO = "bar", THREADS = 3 }, '
                            'binds = { "../dataset:/data" }, pids = 40 }')
        cfg = self.config_json(ws)["values"]["sandbox"]
        self.assertEqual(cfg["env"], {"FOO": "bar", "THREADS": "3"})
        self.assertEqual(cfg["binds"], ["../dataset:/data"])
        rec, r = self.sandbox("sh", "-c", "echo $FOO $THREADS; cat /data/rows.csv; "
                              "echo x > /data/new || echo read-only; sleep 30", cwd=ws)
        self.assertEqual((r.returncode, rec["status"]), (124, "timeout"))  # sandbox.timeout
        self.assertEqual(rec["stdout"]["text"], "bar 3\na,b\n1,2\nread-only\n")
        self.assertFalse(os.path.exists(os.path.join(data, "new")))

    def test_bind_never_writes_to_the_host(self):
        data = self.path("dataset")
        os.makedirs(data)
        inside = f"/usr/share/thalamus-test-{os.getpid()}"
        ws = self.workspace('{ binds = { "' + data + ':' + inside + '" } }')
        r = self.thalamus("sandbox", "run", "--", "true", cwd=ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"cannot create the mount point '{inside}': Read-only file system",
                      r.stderr)
        self.assertFalse(os.path.exists(inside))

    def test_workspace_refuses_api_keys_in_env(self):
        ws = self.workspace('{ env = { OPENAI_API_KEY = "sk-x" } }')
        r = self.thalamus("sandbox", "run", "--", "true", cwd=ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn("API keys never enter the sandbox", r.stderr)

    def test_isolation_none_is_explicit_and_loud(self):
        marker = self.path("visible-marker")
        write(marker, "host file\n")
        ws = self.workspace('{ isolation = "none" }')
        rec, r = self.sandbox("sh", "-c", f"cat {marker}; echo ${{OPENAI_API_KEY:-no-key}}",
                              cwd=ws, env={"OPENAI_API_KEY": "sk-none-mode"})
        self.assertEqual(rec["status"], "ok", rec["reason"])
        self.assertEqual(rec["isolation"], "none")
        self.assertIn('sandbox isolation is "none"', r.stderr)
        self.assertIn("(isolation none)", r.stderr)
        # no isolation: the host is visible (documented), the environment is still clean
        self.assertEqual(rec["stdout"]["text"], "host file\nno-key\n")
        text = self.thalamus("sandbox", "check", cwd=ws).stdout
        self.assertIn("configured isolation: none (experiments run WITHOUT isolation)", text)

    # ---- hosts that cannot isolate (fully) ----

    def test_unprivileged_user_falls_back_to_rlimits(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to switch to an unprivileged user")
        nobody = 65534
        os.chmod(self.tmp, 0o755)
        d = self.path("nobody-work")
        os.makedirs(d)
        for p in ("allocate.py", "fork_bomb.py"):
            shutil.copy(os.path.join(os.path.dirname(__file__), "programs", p), d)
        os.chown(d, nobody, nobody)

        def as_nobody(*args):
            def drop():
                os.setgroups([])
                os.setgid(nobody)
                os.setuid(nobody)
            r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120,
                               preexec_fn=drop, cwd=d, env=dict(self.env, HOME="/nonexistent"))
            self.assertNotIn("runtime error", r.stderr)
            return r

        check = json.loads(as_nobody("sandbox", "check", "--json").stdout)
        if not check["can_isolate"]:
            self.skipTest("unprivileged user namespaces are not available here")
        self.assertFalse(check["features"]["per-sandbox uid"]["active"])
        self.assertFalse(check["features"]["cgroup memory"]["active"])
        self.assertIn("RLIMIT_AS", check["features"]["cgroup memory"]["detail"])
        r = as_nobody("sandbox", "run", "--json", "--memory", "64", "--dir", d, "--",
                      "python3", "allocate.py", "512")
        rec = json.loads(r.stdout)
        self.assertEqual((rec["status"], rec["limit"], rec["uid"]), ("oom", "memory", nobody))
        self.assertIn("MemoryError", rec["reason"])
        self.assertEqual(rec["peak_memory_source"], "largest process")
        r = as_nobody("sandbox", "run", "--json", "--pids", "16", "--dir", d, "--",
                      "python3", "fork_bomb.py", "4242.4242")
        rec = json.loads(r.stdout)
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = json.loads(rec["stdout"]["text"])
        self.assertEqual(out["error"], "EAGAIN")
        self.assertLessEqual(out["forks"], 16)

    def test_refuses_without_user_namespaces(self):
        if not shutil.which("unshare"):
            self.skipTest("no unshare tool")
        # a user namespace in which no further user namespace may be created
        wrap = ["unshare", "-Ur", "sh", "-c",
                'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" "$@"', BIN]
        probe = subprocess.run(wrap + ["--version"], capture_output=True, text=True)
        if probe.returncode != 0:
            self.skipTest("cannot create the test's user namespace: " + probe.stderr.strip())
        r = subprocess.run(wrap + ["sandbox", "run", "--", "true"], capture_output=True,
                           text=True, env=self.env, cwd=self.tmp, timeout=120)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot create a sandbox: this host does not allow new user namespaces",
                      r.stderr)
        self.assertIn("sysctl -w user.max_user_namespaces=", r.stderr)
        self.assertIn('sandbox.isolation = "none"', r.stderr)
        r = subprocess.run(wrap + ["sandbox", "check"], capture_output=True, text=True,
                           env=self.env, cwd=self.tmp, timeout=120)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Sandbox isolation is NOT available on this host.", r.stdout)
        # the explicit way out still runs experiments, loudly
        ws = self.workspace('{ isolation = "none" }')
        r = subprocess.run(wrap + ["sandbox", "run", "--", "sh", "-c", "echo ran"],
                           capture_output=True, text=True, env=self.env, cwd=ws, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "ran\n")
        self.assertIn('sandbox isolation is "none"', r.stderr)


if __name__ == "__main__":
    unittest.main()

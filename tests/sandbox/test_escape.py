"""The adversarial suite: programs that try to escape the sandbox or to
harm the host, each of which must be stopped or contained. Every test
asserts the specific outcome (the errno, the status, what is left on the
host), not merely that something failed."""
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import unittest

from sandbox_case import SandboxCase, feature, processes_with


def unique(prefix):
    return f"{prefix}-{os.getpid()}-{random.randrange(10**9)}"


def wait_for(condition, seconds=30):
    """Polls condition until it holds or seconds pass; returns its last value."""
    import time
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class EscapeTest(SandboxCase):
    def test_host_files_are_out_of_reach(self):
        secret = unique("MARKER-CONTENT")
        markers = [os.path.join("/tmp", unique("thalamus-marker"))]
        if os.access("/root", os.W_OK):
            markers.append(os.path.join("/root", unique("thalamus-marker")))
        for m in markers:
            with open(m, "w") as f:
                f.write(secret + "\n")
            self.addCleanup(os.unlink, m)
        d = self.workdir("read_files.py")
        rec, r = self.sandbox("python3", "read_files.py", *markers, "/etc/shadow",
                              "/etc/hostname", options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = self.program_output(rec)
        self.assertNotIn(secret, r.stdout + r.stderr)
        for m in markers:
            self.assertEqual(out["files"][m], "error:ENOENT")
        self.assertEqual(out["files"]["/etc/shadow"], "error:ENOENT")
        self.assertEqual(out["files"]["/etc/hostname"], "read:sandbox\n")
        self.assertEqual(out["listings"]["/tmp"], [])
        self.assertEqual(out["listings"]["/root"], "error:ENOENT")
        self.assertEqual(out["listings"]["/home"], "error:ENOENT")
        self.assertLessEqual(set(out["listings"]["/"]),
                             {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc",
                              "sbin", "tmp", "usr", "var", "work"})

    def test_writes_outside_work_fail(self):
        outside = self.path("outside")
        os.makedirs(outside)
        d = self.workdir("write_outside.py")
        targets = {
            "/etc/escaped": "EROFS",
            "/usr/escaped": "EROFS",
            "/escaped": "EROFS",
            "/var/escaped": "EROFS",
            "/dev/escaped": "EROFS",
            "/home/escaped": "ENOENT",
            os.path.join(outside, "escaped"): "ENOENT",
            "/proc/sys/kernel/hostname": ("EACCES", "EROFS", "EPERM"),
            "/work/inside": "created",
            "/tmp/inside": "created",
        }
        rec, _ = self.sandbox("python3", "write_outside.py", *targets, options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = self.program_output(rec)
        for path, want in targets.items():
            if isinstance(want, tuple):
                self.assertIn(out[path], want, path)
            else:
                self.assertEqual(out[path], want, path)
        self.assertEqual(os.listdir(outside), [])
        self.assertFalse(os.path.exists("/escaped"))
        self.assertFalse(os.path.exists("/usr/escaped"))
        with open(os.path.join(d, "inside")) as f:  # /work was copied back
            self.assertEqual(f.read(), "escaped\n")

    def test_host_processes_are_invisible(self):
        d = self.workdir("processes.py")
        rec, _ = self.sandbox("python3", "processes.py", options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        procs = self.program_output(rec)
        self.assertEqual(procs["1"], "sandbox-init")
        self.assertEqual(sorted(procs), ["1", "2"])  # init and the program itself
        self.assertEqual(procs["2"], "python3 processes.py")
        for cmdline in procs.values():
            self.assertNotIn("unittest", cmdline or "")
            self.assertNotIn("thalamus", cmdline or "")

    def _server(self):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", 0))
        srv.listen(8)
        srv.settimeout(0.2)
        got = []
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(2)
                    try:
                        got.append(conn.recv(100))
                    except OSError:
                        got.append(b"")
        t = threading.Thread(target=serve, daemon=True)
        t.start()

        def close():
            stop.set()
            t.join()
            srv.close()
        self.addCleanup(close)
        return srv.getsockname()[1], got

    @staticmethod
    def _host_address():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(("10.255.255.255", 1))
                addr = s.getsockname()[0]
            except OSError:
                return None
        return None if addr.startswith("127.") else addr

    def test_no_network_and_no_host_loopback(self):
        port, got = self._server()
        targets = [f"127.0.0.1:{port}"]
        host = self._host_address()
        if host:
            targets.append(f"{host}:{port}")
        d = self.workdir("network.py")
        rec, _ = self.sandbox("python3", "network.py", *targets, options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = self.program_output(rec)
        # its own loopback is up (refused, not unreachable), the host's is not reachable
        self.assertEqual(out["connect"][f"127.0.0.1:{port}"], "ECONNREFUSED")
        if host:
            self.assertEqual(out["connect"][f"{host}:{port}"], "ENETUNREACH")
        self.assertTrue(out["resolve"]["example.com"].startswith("error:"))
        self.assertIn("127.0.0.1", out["resolve"]["localhost"])
        self.assertEqual(got, [])

    def test_network_is_an_explicit_opt_in(self):
        port, got = self._server()
        d = self.workdir("network.py")
        rec, _ = self.sandbox("python3", "network.py", f"127.0.0.1:{port}",
                              options=["--dir", d, "--net"])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        self.assertEqual(self.program_output(rec)["connect"][f"127.0.0.1:{port}"], "connected")
        self.assertEqual(got, [b"hello from the sandbox\n"])

    def test_fork_bomb_hits_the_limit_and_leaves_nothing(self):
        token = f"{3000 + random.randrange(600)}.{random.randrange(10**6):06d}"
        d = self.workdir("fork_bomb.py")
        rec, _ = self.sandbox("python3", "fork_bomb.py", token, options=["--dir", d, "--pids", "32"])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = self.program_output(rec)
        self.assertEqual(out["error"], "EAGAIN")
        self.assertLessEqual(out["forks"], 32)
        self.assertGreater(out["forks"], 0)
        if feature("cgroup pids"):
            self.assertTrue(rec["pids_limit_hit"])
        self.assertEqual(processes_with(token), [])
        self.assertNothingLeft(rec)
        self.assertEqual(subprocess.run(["true"]).returncode, 0)  # the host can still fork

    def test_shell_fork_bomb_is_stopped_by_the_timeout(self):
        rec, r = self.sandbox("bash", "-c", ":(){ :|:& };:; sleep 3600",
                              options=["--pids", "64", "--timeout", "3"])
        self.assertEqual(r.returncode, 124)
        self.assertEqual(rec["status"], "timeout")
        self.assertEqual(rec["limit"], "wall")
        if feature("cgroup pids"):
            self.assertTrue(rec["pids_limit_hit"])
            self.assertIn("the process limit of 64 was reached", rec["reason"])
        self.assertNothingLeft(rec)

    def test_memory_past_the_limit_is_oom(self):
        d = self.workdir("allocate.py")
        rec, _ = self.sandbox("python3", "allocate.py", "512", options=["--dir", d, "--memory", "64"])
        self.assertEqual(rec["status"], "oom", rec["reason"])
        self.assertEqual(rec["limit"], "memory")
        self.assertNotIn("allocated everything", rec["stdout"]["text"])
        if feature("cgroup memory"):
            self.assertEqual(rec["signal"], 9)
            self.assertIn("out-of-memory killer", rec["reason"])
            self.assertLessEqual(rec["peak_memory_bytes"], 64 << 20)
        else:
            self.assertIn("MemoryError", rec["reason"])
        self.assertNothingLeft(rec)

    def test_disk_cap_holds(self):
        d = self.workdir("fill_disk.py")
        rec, _ = self.sandbox("python3", "fill_disk.py", options=["--dir", d, "--disk", "16"])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = self.program_output(rec)
        self.assertEqual(out["/work"]["error"], "ENOSPC")
        self.assertEqual(out["/tmp"]["error"], "ENOSPC")
        self.assertLessEqual(out["/work"]["bytes"] + out["/tmp"]["bytes"], 16 << 20)
        self.assertGreater(out["/work"]["bytes"], 8 << 20)
        on_host = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        self.assertLessEqual(on_host, 16 << 20)

    def test_timeout_leaves_nothing_running(self):
        token = f"{4000 + random.randrange(600)}.{random.randrange(10**6):06d}"
        rec, r = self.sandbox("sh", "-c", f"sleep {token} & sleep {token}; wait",
                              options=["--timeout", "1"])
        self.assertEqual(r.returncode, 124)
        self.assertEqual(rec["status"], "timeout")
        self.assertEqual(processes_with(token), [])
        self.assertNothingLeft(rec)

    def test_daemon_does_not_survive_the_run(self):
        token = f"{5000 + random.randrange(600)}.{random.randrange(10**6):06d}"
        d = self.workdir("daemon.py")
        rec, _ = self.sandbox("python3", "daemon.py", token, options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        self.assertIn("the daemon is running", rec["stdout"]["text"])
        self.assertEqual(processes_with(token), [])
        self.assertNothingLeft(rec)

    def test_results_cannot_escape_or_hang(self):
        secret = unique("ROOT-SECRET")
        marker = None
        if os.access("/root", os.W_OK):
            marker = os.path.join("/root", unique("thalamus-marker"))
            with open(marker, "w") as f:
                f.write(json.dumps({"score": secret}))
            self.addCleanup(os.unlink, marker)
        cases = [(["symlink", "/etc/passwd"], "symbolic link"),
                 (["symlink", "../../../../../etc/passwd"], "symbolic link"),
                 (["fifo"], "not a regular file"),
                 (["directory"], "not a regular file"),
                 (["huge"], "larger than the limit")]
        if marker:
            cases.append((["symlink", "../../../.." + marker], "symbolic link"))
        for args, reason in cases:
            with self.subTest(args=args):
                d = self.workdir("bad_results.py", name="work-" + args[0] + str(len(args[-1])))
                rec, r = self.sandbox("python3", "bad_results.py", *args, options=["--dir", d])
                self.assertEqual(rec["status"], "invalid")
                self.assertIn(reason, rec["reason"])
                self.assertIsNone(rec["results"])
                self.assertNotIn("root:x:0:0", r.stdout)
                self.assertNotIn(secret, r.stdout + r.stderr)
                if args[0] == "symlink":  # copied back as a link, never followed
                    self.assertTrue(os.path.islink(os.path.join(d, "results.json")))

    def test_traceback_never_reads_outside_work(self):
        d = self.workdir("bad_results.py")
        rec, r = self.sandbox("python3", "bad_results.py", "fake-traceback", options=["--dir", d])
        self.assertEqual(rec["status"], "failed")
        tb = rec["traceback"]
        self.assertTrue(tb["python"])
        self.assertEqual(tb["type"], "RuntimeError")
        self.assertEqual(len(tb["frames"]), 3)
        for frame in tb["frames"]:
            self.assertEqual(frame["source"], [])
        self.assertNotIn("root:x:0:0", r.stdout)

    def test_api_keys_never_enter(self):
        keys = {"OPENAI_API_KEY": unique("sk-test-openai"),
                "ANTHROPIC_API_KEY": unique("sk-ant-test"),
                "MY_SERVICE_TOKEN": unique("tok")}
        d = self.workdir("read_keys.py")
        rec, r = self.sandbox("python3", "read_keys.py", options=["--dir", d], env=keys)
        self.assertEqual(rec["status"], "ok", rec["reason"])
        for value in keys.values():
            self.assertNotIn(value, r.stdout + r.stderr)
        out = self.program_output(rec)
        self.assertNotIn("OPENAI_API_KEY", out["environ"])
        self.assertEqual(out["environ"]["HOME"], "/work")
        self.assertEqual(out["proc"]["/proc/1/environ"], "error:EACCES")
        self.assertEqual(out["proc"]["/proc/1/mem"], "error:EACCES")
        # streamed output, too
        r = self.thalamus("sandbox", "run", "--dir", d, "--", "python3", "read_keys.py", env=keys)
        self.assertEqual(r.returncode, 0, r.stderr)
        for value in keys.values():
            self.assertNotIn(value, r.stdout + r.stderr)

    def test_sandboxes_die_with_thalamus(self):
        token = f"{6000 + random.randrange(600)}.{random.randrange(10**6):06d}"
        p = subprocess.Popen([self.bin(), "sandbox", "run", "--", "sleep", token],
                             env=self.env, cwd=self.tmp, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        def own(prefix):
            found = []
            for base, dirs, _ in os.walk("/sys/fs/cgroup"):
                if base.count("/") > 8:
                    dirs[:] = []
                found += [os.path.join(base, d) for d in dirs if d.startswith(prefix)]
            return found
        try:
            # the program itself (thalamus's own command line holds the token)
            self.assertTrue(wait_for(lambda: set(processes_with(token)) - {p.pid}),
                            "the sandbox never started")
            bases = {os.path.dirname(d) for d in own(f"thalamus-{p.pid}-")}
            self.assertTrue(bases, "the sandbox has no cgroup")
        finally:
            p.kill()  # SIGKILL: thalamus gets no chance to clean up
            p.wait()
        self.assertTrue(wait_for(lambda: not processes_with(token)),
                        "the sandboxed program outlived thalamus")
        # as if it had been killed while it probed where it may make cgroups
        for base in bases:
            try:
                os.mkdir(os.path.join(base, f"thalamus-probe-{p.pid}"))
            except OSError:
                pass  # not allowed here: nothing to check there
        # the cgroups of the dead thalamus go away when the next one starts
        rec, _ = self.sandbox("true")
        self.assertEqual(rec["status"], "ok")
        self.assertEqual(own(f"thalamus-{p.pid}-"), [])
        self.assertEqual(own(f"thalamus-probe-{p.pid}"), [])

    def test_dangerous_calls_fail_with_eperm(self):
        d = self.workdir("syscalls.py")
        rec, _ = self.sandbox("python3", "syscalls.py", options=["--dir", d])
        self.assertEqual(rec["status"], "ok", rec["reason"])
        out = self.program_output(rec)
        tool = out.pop("unshare_tool")
        self.assertNotEqual(tool["returncode"], 0)
        self.assertIn("Operation not permitted", tool["stderr"])
        for call, result in out.items():
            self.assertEqual(result, "EPERM", call)
        self.assertIn("ptrace_attach", out)
        self.assertIn("unshare_user", out)
        self.assertIn("mount", out)


if __name__ == "__main__":
    unittest.main()

"""The work of scripts/bench/overhead.sh (see there): runs the offline
research loop of the classifier template with one job, N experiments, with
sandbox.isolation "none" and "full", REPS times each, and prints the time
outside the sandbox per experiment.

The figures come from thalamus's own debug log (-v --log-json), whose lines
carry millisecond times: "sandbox ... started" and "sandbox ... ended" mark
each experiment's time in the sandbox, and "agent '...' answered after ...,
... of it running" what each agent call ran. With one job, the time from
one sandbox's end to the next one's start is what the loop spends between
two experiments (analysis, commit, selection, ideas, the coder, the next
work directory and sandbox). Of it, the agents' running time is the
agents' share (planner, retriever, critic, coder: with a model, their
thinking is the model's; offline, the offline strategies compute it) and
the rest is the orchestrator's own (store, memory, git, work directories,
creating the sandbox). The run's start (up to the baseline's sandbox) and
end (after the last one) are paid once per run and are printed apart.
Beside them, the CPU time of the thalamus process itself (its children not
counted) per experiment, start and end included, sampled from
/proc/PID/stat while it runs, which a busy host disturbs less than the
wall time."""
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")
# debug lines of orchestrator/agent.c and sandbox/sandbox.c
AGENT_LINE = re.compile(r"agent '[^']*' (?:answered|failed) after [0-9.]+ ms, "
                        r"([0-9.]+) ms of it running")
SANDBOX_LINE = re.compile(r"sandbox \d+ (started|ended)\b")


def sh(args, cwd, env):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"overhead: {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def own_cpu(pid):
    """utime + stime of pid in seconds, not counting its children."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def timeline(err):
    """The gaps between one sandbox's end and the next one's start, each as
    (milliseconds, agents' running milliseconds within it), and the
    milliseconds before the first sandbox and after the last one (the log's
    first and last lines bound the run)."""
    gaps, first, last, ended, agents = [], None, None, None, 0.0
    start = before = None
    for line in err.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        t = datetime.datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
        first = t if first is None else first
        last = t
        msg = rec.get("msg", "")
        m = SANDBOX_LINE.match(msg)
        if m and m.group(1) == "started":
            if start is None:
                start = t
                before = 1000 * (t - first)
            elif ended is not None:
                gaps.append((1000 * (t - ended), agents))
            ended, agents = None, 0.0
        elif m:
            ended = t
        else:
            a = AGENT_LINE.match(msg)
            if a and ended is not None:
                agents += float(a.group(1))
    after = 1000 * (last - ended) if ended is not None else 0.0
    return gaps, before or 0.0, after


def one_run(bin_, root, name, isolation, n, env, keep=False):
    ws = os.path.join(root, name)
    sh([bin_, "init", ws, "--template", "classifier"], root, env)
    path = os.path.join(ws, "thalamus.lua")
    with open(path) as f:
        text = f.read().replace("return {", "local cfg = {", 1)
    with open(path, "w") as f:
        f.write(text + f'\ncfg.sandbox.isolation = "{isolation}"\nreturn cfg\n')
    args = [bin_, "-v", "--log-json", "run", "--provider", "offline", "--experiments", str(n),
            "--rounds", "1000", "--jobs", "1", "--seed", "1"]
    p = subprocess.Popen(args, cwd=ws, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    cpu = 0.0
    while p.poll() is None:
        c = own_cpu(p.pid)
        if c is not None:
            cpu = c
        time.sleep(0.05)
    err = p.stderr.read()
    if p.returncode != 0:
        sys.exit(f"overhead: the run failed ({p.returncode}):\n{err}")
    gaps, before, after = timeline(err)
    if not gaps:
        sys.exit("overhead: the debug log shows no experiment after the baseline")
    if not keep:
        shutil.rmtree(ws, ignore_errors=True)
    return gaps, before, after, cpu


def file_system(path):
    """The type and mount point of the file system holding path."""
    best = ("?", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount = fields[4]
            fstype = fields[fields.index("-") + 1]
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[1]):
                best = (fstype, mount)
    return best


def creation_cost(root):
    """Median microseconds to create a small file and a directory in root:
    the loop creates a few dozen of each per experiment (git objects, work
    directories, refs), and what they cost differs widely between file
    systems and with a file system's state. The probe's files are removed
    at the end, with the workspaces."""
    probe = os.path.join(root, "probe")
    os.mkdir(probe)
    files, dirs = [], []
    for i in range(200):
        t = time.perf_counter()
        fd = os.open(os.path.join(probe, f"f{i}"), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 200)
        os.close(fd)
        files.append(time.perf_counter() - t)
    for i in range(50):
        t = time.perf_counter()
        os.mkdir(os.path.join(probe, f"d{i}"))
        dirs.append(time.perf_counter() - t)
    return 1e6 * statistics.median(files), 1e6 * statistics.median(dirs)


class Runs:
    """The figures of one build's runs with one isolation."""

    def __init__(self):
        self.between, self.agent, self.own, self.cpus = [], [], [], []
        self.starts, self.ends = [], []

    def add(self, gaps, before, after, cpu):
        self.between.append(statistics.mean(g for g, _ in gaps))
        self.agent.append(statistics.mean(a for _, a in gaps))
        self.own.append(statistics.mean(g - a for g, a in gaps))
        self.cpus.append(1000 * cpu / (len(gaps) + 1))
        self.starts.append(before)
        self.ends.append(after)
        return (f"{self.between[-1]:.1f} ms between experiments = agents {self.agent[-1]:.1f} + "
                f"orchestrator {self.own[-1]:.1f} (median gap "
                f"{statistics.median(g for g, _ in gaps):.1f}, {len(gaps)} gaps); start "
                f"{before:.0f} ms, end {after:.0f} ms; thalamus's own CPU {self.cpus[-1]:.1f} ms "
                f"per experiment")

    def summary(self):
        med = statistics.median
        return (f"medians per experiment: {med(self.between):.1f} ms outside the sandbox (range "
                f"{min(self.between):.1f} to {max(self.between):.1f}), of which agents "
                f"{med(self.agent):.1f} ms and the orchestrator {med(self.own):.1f} ms (range "
                f"{min(self.own):.1f} to {max(self.own):.1f}); once per run: start "
                f"{med(self.starts):.0f} ms, end {med(self.ends):.0f} ms; thalamus's own CPU "
                f"{med(self.cpus):.1f} ms")


def main():
    bin_, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    other = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    root = tempfile.mkdtemp(prefix="thalamus-overhead.")
    env = dict(os.environ)
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    env.pop("THALAMUS_PROVIDER", None)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"classifier template, offline, 1 job, {n} experiments, {reps} runs per isolation "
          f"(load average {load}, {os.cpu_count()} CPUs); per experiment: the time from one "
          f"experiment's end to the next one's start, split into the agents' running time and "
          f"the orchestrator's")
    if other:
        print(f"comparing A = {bin_} with B = {other}: runs alternate A B B A ..., and every "
              f"workspace stays until the end", flush=True)
    fstype, mount = file_system(root)
    file_us, dir_us = creation_cost(root)
    print(f"workspaces in {root} ({fstype} mounted at {mount}): creating a file there takes "
          f"{file_us:.0f} us and a directory {dir_us:.0f} us (median); set TMPDIR to measure "
          f"another file system", flush=True)
    try:
        for isolation in ("none", "full"):
            if not other:
                runs = Runs()
                for rep in range(reps):
                    line = runs.add(*one_run(bin_, root, f"ws-{isolation}-{rep}", isolation, n,
                                             env))
                    print(f"  isolation {isolation}: {line}", flush=True)
                print(f"isolation {isolation}: {runs.summary()}", flush=True)
                continue
            runs = {"A": Runs(), "B": Runs()}
            for rep in range(reps):
                for k in ("A", "B") if rep % 2 == 0 else ("B", "A"):
                    line = runs[k].add(*one_run(bin_ if k == "A" else other, root,
                                                f"ws-{isolation}-{k}{rep}", isolation, n, env,
                                                keep=True))
                    print(f"  isolation {isolation}, {k}: {line}", flush=True)
            for k in ("A", "B"):
                print(f"isolation {isolation}, {k}: {runs[k].summary()}", flush=True)
            faster = sum(b < a for a, b in zip(runs["A"].own, runs["B"].own))
            print(f"isolation {isolation}: the orchestrator's own time was lower with B in "
                  f"{faster} of {reps} pairs", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

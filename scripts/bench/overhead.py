"""The work of scripts/bench/overhead.sh (see there): runs the offline
research loop of the classifier template with one job, N experiments, with
sandbox.isolation "none" and "full", REPS times each, and prints the
orchestrator's own time per experiment: the run's wall time minus the time
the experiments spent in the sandbox (each node's seconds), divided by the
nodes that ran (the baseline included). Of that time, the part spent
running the agents (planner, retriever, critic, coder: with a model, their
thinking is the model's; offline, the offline strategies compute it), read
from thalamus's debug log, which says what each agent call took; the rest
is the orchestrator's own (store, memory, git, work directories, creating
the sandbox). Beside them, the CPU time of the thalamus process itself
(its children not counted), sampled from /proc/PID/stat while it runs,
which a busy host disturbs less than the wall time."""
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
# the debug line of orchestrator/agent.c for each agent call
AGENT_LINE = re.compile(r"agent '[^']*' (?:answered|failed) after [0-9.]+ ms, ([0-9.]+) ms of it running")


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


def one_run(bin_, root, name, isolation, n, env):
    ws = os.path.join(root, name)
    sh([bin_, "init", ws, "--template", "classifier"], root, env)
    path = os.path.join(ws, "thalamus.lua")
    with open(path) as f:
        text = f.read().replace("return {", "local cfg = {", 1)
    with open(path, "w") as f:
        f.write(text + f'\ncfg.sandbox.isolation = "{isolation}"\nreturn cfg\n')
    args = [bin_, "-v", "--log-json", "run", "--provider", "offline", "--experiments", str(n), "--rounds", "1000",
            "--jobs", "1", "--seed", "1"]
    start = time.monotonic()
    p = subprocess.Popen(args, cwd=ws, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    cpu = 0.0
    while p.poll() is None:
        c = own_cpu(p.pid)
        if c is not None:
            cpu = c
        time.sleep(0.05)
    wall = time.monotonic() - start
    err = p.stderr.read()
    if p.returncode != 0:
        sys.exit(f"overhead: the run failed ({p.returncode}):\n{err}")
    agents = 0.0
    for line in err.splitlines():
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        m = AGENT_LINE.match(msg)
        if m:
            agents += float(m.group(1)) / 1000
    nodes = json.loads(sh([bin_, "log", "--json"], ws, env))["nodes"]
    ran = [x for x in nodes if x["status"] != "pending"]
    inside = sum(x["seconds"] or 0 for x in ran)
    shutil.rmtree(ws, ignore_errors=True)
    return len(ran), wall, inside, agents, cpu


def main():
    bin_, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    root = tempfile.mkdtemp(prefix="thalamus-overhead.")
    env = dict(os.environ)
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    env.pop("THALAMUS_PROVIDER", None)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"classifier template, offline, 1 job, {n} experiments, {reps} runs per isolation "
          f"(load average {load}, {os.cpu_count()} CPUs)")
    try:
        for isolation in ("none", "full"):
            outside, agent, own, cpus = [], [], [], []
            for rep in range(reps):
                ran, wall, inside, agents, cpu = one_run(bin_, root, f"ws-{isolation}-{rep}",
                                                         isolation, n, env)
                outside.append(1000 * (wall - inside) / ran)
                agent.append(1000 * agents / ran)
                own.append(outside[-1] - agent[-1])
                cpus.append(1000 * cpu / ran)
                print(f"  isolation {isolation}: wall {wall:.2f} s, in the sandbox "
                      f"{inside:.2f} s, in agents {agents:.2f} s, {ran} runs: per experiment "
                      f"{outside[-1]:.1f} ms outside the sandbox = agents {agent[-1]:.1f} ms + "
                      f"orchestrator {own[-1]:.1f} ms; thalamus's own CPU {cpus[-1]:.1f} ms",
                      flush=True)
            print(f"isolation {isolation}: medians per experiment: {statistics.median(outside):.1f}"
                  f" ms outside the sandbox (range {min(outside):.1f} to {max(outside):.1f}), of "
                  f"which agents {statistics.median(agent):.1f} ms and the orchestrator "
                  f"{statistics.median(own):.1f} ms (range {min(own):.1f} to {max(own):.1f}); "
                  f"thalamus's own CPU {statistics.median(cpus):.1f} ms", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The work of scripts/bench/efficacy.sh (see there): runs thalamus on each
bundled task with the built-in offline agents (tree search) and with a
workspace planner that draws uniform random points of the search space
(random search: one expansion of the baseline, every idea kept), N
experiments each, for several seeds, and prints the best metric's mean and
spread. Then one more tree-search run with one job measures the
orchestrator's overhead per experiment: the run's wall time minus the time
experiments spent in the sandbox, divided by the experiments run."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RANDOM_PLANNER = """-- uniform random search over task.search_space (a benchmark baseline)
local space_lib = require("lib.space")
local util = require("lib.util")
return {
  name = "planner", role = "planner",
  description = "random search: uniform points of the search space",
  run = function(ctx, input)
    local space = space_lib.from_task(ctx.task)
    local k = math.tointeger(input.k) or 3
    local rng = util.rng(tostring(input.seed) .. "|" .. tostring(ctx.node))
    local base = (type(input.node) == "table" and input.node.params) or {}
    local ideas = {}
    for i = 1, k do
      local params = util.copy(base)
      for name, v in pairs(space_lib.sample(space, rng)) do params[name] = v end
      ideas[i] = { title = "Random point " .. i, hypothesis = "A uniform point of the space.",
                   changes = { "every parameter drawn at random" },
                   rationale = "random search baseline", params = params }
    end
    return { ideas = ideas }
  end,
}
"""


def sh(args, cwd, env):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"efficacy: {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def workspace(bin_, template, root, name, env, random):
    ws = os.path.join(root, name)
    sh([bin_, "init", ws, "--template", template], root, env)
    if random:
        os.makedirs(os.path.join(ws, "agents"))
        with open(os.path.join(ws, "agents", "planner.lua"), "w") as f:
            f.write(RANDOM_PLANNER)
    return ws


def run(bin_, ws, env, args):
    t0 = time.monotonic()
    out = sh([bin_, "run", "--provider", "offline", "--json", *args], ws, env)
    wall = time.monotonic() - t0
    status = json.loads(sh([bin_, "status", "--json"], ws, env))
    nodes = json.loads(sh([bin_, "log", "--json"], ws, env))["nodes"]
    return status, nodes, wall, out


def best_of(status):
    return status["best"]["metric"] if status["best"] else float("nan")


def fmt(values):
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {sd:.4f} (min {min(values):.4f}, max {max(values):.4f})"


def main():
    bin_, n, seeds, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    examples = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
    tasks = sorted(d for d in os.listdir(examples)
                   if os.path.isfile(os.path.join(examples, d, "thalamus.lua")))
    root = tempfile.mkdtemp(prefix="thalamus-efficacy-")
    env = dict(os.environ)
    env.update({"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
                "THALAMUS_PROVIDER": "offline"})
    print(f"efficacy: {n} experiments per run, {seeds} seeds, {jobs} jobs, "
          f"tasks: {', '.join(tasks)}")
    try:
        for task in tasks:
            tree, rand, base = [], [], None
            for seed in range(1, seeds + 1):
                ws = workspace(bin_, task, root, f"{task}-tree-{seed}", env, False)
                st, _, _, _ = run(bin_, ws, env, ["--experiments", str(n), "--rounds", "1000",
                                                  "--jobs", jobs, "--seed", str(seed)])
                tree.append(best_of(st))
                base = st["baseline"]["metric"]
                goal = st["task"]["goal"]
                metric = st["task"]["metric"]
                ws = workspace(bin_, task, root, f"{task}-random-{seed}", env, True)
                st, _, _, _ = run(bin_, ws, env, ["--experiments", str(n), "--rounds", "1",
                                                  "--drafts", str(n), "--keep", str(n),
                                                  "--jobs", jobs, "--seed", str(seed)])
                rand.append(best_of(st))
                print(f"  {task} seed {seed}: tree {tree[-1]:.4f}  random {rand[-1]:.4f}",
                      flush=True)
            sign = -1 if goal == "minimize" else 1
            wins = sum(1 for a, b in zip(tree, rand) if sign * a > sign * b)
            print(f"{task}: best {metric} after {n} experiments ({goal}; baseline {base:.4f})")
            print(f"  tree search    {fmt(tree)}")
            print(f"  random search  {fmt(rand)}")
            diffs = [sign * (a - b) for a, b in zip(tree, rand)]
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            print(f"  tree search better on {wins} of {seeds} seeds; mean difference "
                  f"{statistics.mean(tree) - statistics.mean(rand):+.4f} "
                  f"(paired standard error {se:.4f})")
            # overhead: one job, so sandbox times do not overlap; with full
            # isolation the time outside includes creating each sandbox, with
            # isolation "none" it is the orchestrator's own (agents, store, git)
            for isolation in ("full", "none"):
                ws = workspace(bin_, task, root, f"{task}-overhead-{isolation}", env, False)
                if isolation == "none":
                    path = os.path.join(ws, "thalamus.lua")
                    with open(path) as f:
                        text = f.read().replace("return {", "local cfg = {", 1)
                    with open(path, "w") as f:
                        f.write(text + '\ncfg.sandbox.isolation = "none"\nreturn cfg\n')
                    sh(["git", "commit", "-qam", "no isolation"], ws, env)
                st, nodes, wall, _ = run(bin_, ws, env, ["--experiments", str(n), "--rounds",
                                                         "1000", "--jobs", "1", "--seed", "1"])
                inside = sum(x["seconds"] or 0 for x in nodes if x["status"] != "pending")
                ran = sum(1 for x in nodes if x["status"] != "pending")
                print(f"  overhead, isolation {isolation}: run {st['budget']['seconds']:.2f} s "
                      f"(process {wall:.2f} s), experiments' own time {inside:.2f} s, {ran} runs "
                      f"with the baseline: {1000 * (st['budget']['seconds'] - inside) / ran:.1f} "
                      f"ms per experiment outside the sandbox "
                      f"({1000 * (wall - inside) / ran:.1f} ms with start-up)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""End-to-end tests of the research loop: `thalamus run`, `resume`, `runs`,
`status`, `log` and `show` on the classifier template, offline, with small
budgets. They check the ledger with the system git (commits, parents,
trailers, notes, refs, fsck, the user's branch untouched), the store with
sqlite3, and that interrupting a run at several moments (Ctrl-C, kill -9,
a crash between a commit and its record) loses no experiment and runs or
commits none twice."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import unittest

from harness import BIN, Case

TRAILERS = ("Thalamus-Run", "Thalamus-Node", "Thalamus-Status", "Thalamus-Metric",
            "Thalamus-Model")


def can_isolate(env):
    r = subprocess.run([BIN, "sandbox", "check", "--json"], env=env, capture_output=True,
                       text=True, timeout=60)
    try:
        return bool(json.loads(r.stdout).get("can_isolate"))
    except ValueError:
        return False


def descendants(root):
    """The pids of root's descendants, from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    """Whether pid runs (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class RunCase(Case):
    """Helpers shared by the research-loop tests."""

    def workspace(self, name="ws", extra_lua=""):
        ws = self.init_workspace(name)
        if not can_isolate(self.env) or extra_lua:
            # The sandbox needs user namespaces; without them experiments run
            # unisolated (the loop is what is tested here).
            path = os.path.join(ws, "thalamus.lua")
            with open(path) as f:
                text = f.read()
            extra = extra_lua
            if not can_isolate(self.env):
                extra += ' cfg.sandbox.isolation = "none"'
            text = text.replace("return {", "local cfg = {", 1) + \
                "\n" + extra + "\nreturn cfg\n"
            with open(path, "w") as f:
                f.write(text)
            self.git(ws, "commit", "-qam", "test settings")
        return ws

    def db(self, ws):
        con = sqlite3.connect(os.path.join(ws, ".thalamus", "memory.db"))
        con.row_factory = sqlite3.Row
        return con

    def events(self, out):
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def nodes(self, ws, run=None):
        args = ["log", "--json"] + ([run] if run else [])
        return json.loads(self.ok(*args, cwd=ws).stdout)["nodes"]

    def refs(self, ws, run):
        out = self.git(ws, "for-each-ref", "--format=%(refname) %(objectname)",
                       f"refs/thalamus/runs/{run}/")
        return dict(line.split() for line in out.splitlines())

    def check_ledger(self, ws, run, head):
        """Every finished node has one commit under its ref, with the right
        parent, trailers and note; nothing is committed twice; fsck is clean;
        the user's branch, index and working tree are untouched."""
        nodes = self.nodes(ws, run)
        by_id = {n["id"]: n for n in nodes}
        refs = self.refs(ws, run)
        done = [n for n in nodes if n["status"] not in ("pending", "running")]
        self.assertEqual(len(refs), len(done), (refs, nodes))
        commits = [n["commit"] for n in done]
        self.assertEqual(len(set(commits)), len(commits), "a commit recorded twice")
        self.assertEqual(by_id["n0"]["commit"], head)
        for n in done:
            self.assertEqual(refs[f"refs/thalamus/runs/{run}/{n['id']}"], n["commit"])
            if n["parent"] is None:
                continue
            parent = by_id[n["parent"]]
            self.assertEqual(self.git(ws, "rev-parse", n["commit"] + "^").strip(),
                             parent["commit"], f"{n['id']} does not build on {n['parent']}")
            msg = self.git(ws, "log", "-1", "--format=%B", n["commit"])
            self.assertTrue(msg.startswith(n["title"]), msg)
            trailers = dict(re.findall(r"^(Thalamus-[A-Za-z]+): (.*)$", msg, re.M))
            for t in TRAILERS[:3] + TRAILERS[4:]:
                self.assertIn(t, trailers, msg)
            self.assertEqual(trailers["Thalamus-Run"], run)
            self.assertEqual(trailers["Thalamus-Node"], n["id"])
            self.assertEqual(trailers["Thalamus-Status"], n["status"])
            self.assertEqual(trailers["Thalamus-Model"], "offline")
            if n["metric"] is not None:
                name, value = trailers["Thalamus-Metric"].split("=")
                self.assertEqual(name, "accuracy")
                self.assertAlmostEqual(float(value), n["metric"], places=9)
            note = self.git(ws, "notes", "--ref=thalamus", "show", n["commit"])
            self.assertIn(f"node: {n['id']}", note)
            self.assertIn(f"status: {n['status']}", note)
            # only the experiment directory differs from the parent
            changed = self.git(ws, "diff", "--name-only", parent["commit"], n["commit"])
            for path in changed.split():
                self.assertTrue(path.startswith("experiment/"), path)
        # one documented command shows the whole tree
        graph = self.git(ws, "log", "--graph", "--oneline", f"--glob=refs/thalamus/runs/{run}/*")
        for c in set(commits):
            self.assertIn(c[:7], graph)
        fsck = subprocess.run(["git", "-C", ws, "fsck", "--no-dangling"], env=self.env,
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(fsck.returncode, 0, fsck.stdout + fsck.stderr)
        self.assertEqual(self.git(ws, "rev-parse", "HEAD").strip(), head)
        self.assertEqual(self.git(ws, "status", "--porcelain"), "")
        return nodes

    def check_store(self, ws, run):
        """One result episode per finished experiment and distinct finishing
        orders: no experiment was recorded twice."""
        con = self.db(ws)
        dup = con.execute("SELECT node, count(*) FROM memory_episodes WHERE kind = 'result'"
                          " AND run = ? GROUP BY node HAVING count(*) > 1", (run,)).fetchall()
        self.assertEqual([tuple(r) for r in dup], [])
        rows = con.execute("SELECT id, state, finish_order FROM research_nodes WHERE run = ?",
                           (run,)).fetchall()
        orders = [r["finish_order"] for r in rows if r["state"] == "done"]
        self.assertEqual(sorted(orders), list(range(1, len(orders) + 1)))
        results = con.execute("SELECT count(*) FROM memory_episodes WHERE kind = 'result'"
                              " AND run = ?", (run,)).fetchone()[0]
        self.assertEqual(results, len(orders))
        con.close()


class TestOfflineRun(RunCase):
    def test_run_commits_every_experiment_and_reviews_it(self):
        ws = self.workspace()
        head = self.git(ws, "rev-parse", "HEAD").strip()
        r = self.ok("run", "--provider", "offline", "--rounds", "2", "--jobs", "2", "--seed",
                    "7", "--json", cwd=ws)
        ev = self.events(r.stdout)
        kinds = [e["event"] for e in ev]
        self.assertEqual(kinds[0], "started")
        self.assertEqual(kinds[-1], "finished")
        self.assertIn("baseline", kinds)
        self.assertIn("expanded", kinds)
        fin = ev[-1]
        self.assertEqual(fin["status"], "finished")
        self.assertIn("round limit reached: 2 rounds", fin["stop_reason"])
        nodes = self.check_ledger(ws, "r1", head)
        self.check_store(ws, "r1")
        # drafts from the baseline, then a round from one of them
        self.assertEqual(nodes[0]["parent"], None)
        drafts = [n for n in nodes if n["parent"] == "n0"]
        self.assertEqual(len(drafts), 3)
        self.assertTrue(all(n["kind"] == "draft" for n in drafts))
        improve = [n for n in nodes if n["kind"] == "improve"]
        self.assertEqual(len(improve), 2)
        self.assertEqual(len(nodes), 6)
        self.assertEqual(fin["experiments"], 5)
        # the best is the best ok metric, and the summary says so
        scored = [n for n in nodes if n["status"] == "ok" and n["metric"] is not None]
        best = max(scored, key=lambda n: n["metric"])
        self.assertEqual(fin["best"], best["id"])
        status = json.loads(self.ok("status", "--json", cwd=ws).stdout)
        self.assertEqual(status["best"]["node"], best["id"])
        self.assertEqual(status["best"]["commit"], best["commit"])
        self.assertAlmostEqual(status["improvement"], best["metric"] - nodes[0]["metric"])
        self.assertEqual(status["counts"]["ok"] + status["counts"]["failed"] +
                         status["counts"]["invalid"] + status["counts"]["timeout"], 6)
        self.assertEqual(status["budget"]["experiments"], 5)
        # the offline coder changed params.json only: show gives that diff
        shown = json.loads(self.ok("show", drafts[0]["id"], "--json", cwd=ws).stdout)
        self.assertIn("experiment/params.json", shown["diff"])
        self.assertRegex(shown["diff"], r"(?m)^\+  \"")
        self.assertEqual(shown["commit"], drafts[0]["commit"])
        text = self.ok("show", improve[0]["id"], cwd=ws).stdout
        self.assertIn("Hypothesis", text)
        self.assertIn("Diff against the parent", text)
        # log draws the tree; runs lists the run
        log = self.ok("log", cwd=ws).stdout
        for n in nodes:
            self.assertIn(n["id"], log)
        self.assertIn("└─", log)
        runs = json.loads(self.ok("runs", "--json", cwd=ws).stdout)
        self.assertEqual([x["id"] for x in runs], ["r1"])
        self.assertEqual(runs[0]["status"], "finished")
        # memory: a result per experiment, ideas in the idea bank, insights
        con = self.db(ws)
        self.assertEqual(con.execute("SELECT count(*) FROM memory_items WHERE kind = 'idea'")
                         .fetchone()[0], 5)
        payload = json.loads(con.execute(
            "SELECT payload FROM memory_episodes WHERE kind = 'result' AND node = ?",
            (best["id"],)).fetchone()[0])
        self.assertEqual(payload["metric"], best["metric"])
        self.assertEqual(payload["status"], "ok")
        self.assertIn("params", payload)
        con.close()

    def test_limits_and_target_are_said_plainly(self):
        ws = self.workspace()
        r = self.ok("-v", "run", "--provider", "offline", "--rounds", "10", "--experiments",
                    "2", "--jobs", "1", "--seed", "3", cwd=ws)
        self.assertIn("stopped: experiment limit reached: 2 experiments", r.stdout)
        nodes = self.nodes(ws)
        self.assertEqual(len([n for n in nodes[1:] if n["commit"]]), 2)
        # the first draft's directory was written while the drafts were
        # chosen; the third draft's while the second ran, and it was removed
        # when the limit left that draft pending
        self.assertIn("n1: work directory written while the ideas were chosen", r.stderr)
        self.assertIn("n3: work directory prepared while waiting", r.stderr)
        self.assertEqual(nodes[3]["status"], "pending")
        runs = os.path.join(ws, ".thalamus", "runs", "r1")
        self.assertEqual(sorted(d for d in os.listdir(runs) if d.startswith("n")),
                         ["n0", "n1", "n2"])
        # a second run with a target the baseline already meets stops there
        r = self.ok("run", "--provider", "offline", "--target", "0.1", "--seed", "3", cwd=ws)
        self.assertIn("stopped: target reached", r.stdout)
        self.assertEqual(len(json.loads(self.ok("runs", "--json", cwd=ws).stdout)), 2)
        bad = self.thalamus("run", "--target", "high", cwd=ws)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("--target needs a number", bad.stderr)
        bad = self.thalamus("show", "x7", cwd=ws)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("'x7' is not a node", bad.stderr)
        bad = self.thalamus("show", "n99", cwd=ws)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("has no node n99", bad.stderr)
        bad = self.thalamus("resume", cwd=ws)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("has finished", bad.stderr)

    def test_unisolated_run_warns_once(self):
        ws = self.workspace(extra_lua=' cfg.sandbox.isolation = "none"')
        r = self.ok("run", "--provider", "offline", "--experiments", "3", "--jobs", "1",
                    "--seed", "3", cwd=ws)
        self.assertEqual(r.stderr.count("runs with this user's full access"), 1, r.stderr)

    def test_review_commands_need_a_run(self):
        ws = self.workspace()
        r = self.thalamus("status", cwd=ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no run yet; start one with 'thalamus run'", r.stderr)
        self.assertIn("no run yet", self.ok("runs", cwd=ws).stdout)


EXPLORER = """return {
  name = "explorer", role = "planner", description = "one fixed idea",
  run = function(ctx, input)
    local params = { epochs = 7 }  -- the same change wherever it applies
    return { ideas = { { title = "Explorer: seven epochs", hypothesis = "Fewer epochs.",
                         changes = { "epochs = 7" }, rationale = "a fixed probe",
                         params = params } } }
  end,
}
"""

SKEPTIC = """local thalamus = require("thalamus")
return {
  name = "skeptic", role = "critic", description = "ranks ideas in reverse",
  run = function(ctx, input)
    if input.mode == "analyse" then
      return { label = "maintain", insight = "the skeptic doubts it." }
    end
    thalamus.memory.remember{ kind = "note", text = "skeptic reviewed " .. #input.ideas }
    local scores, ranking = {}, {}
    for i = 1, #input.ideas do
      scores[i] = { feasibility = 1, novelty = 1, expected_gain = 0, score = 0 }
      ranking[i] = #input.ideas - i + 1
    end
    return { scores = scores, ranking = ranking }
  end,
}
"""


class TestExtraAgents(RunCase):
    def test_extra_agents_join_their_stages(self):
        ws = self.workspace(extra_lua='cfg.agents = { extra = { ideate = { "explorer" }, '
                            'review = { "skeptic" }, analyse = { "skeptic" } } }')
        os.makedirs(os.path.join(ws, "agents"))
        with open(os.path.join(ws, "agents", "explorer.lua"), "w") as f:
            f.write(EXPLORER)
        with open(os.path.join(ws, "agents", "skeptic.lua"), "w") as f:
            f.write(SKEPTIC)
        self.ok("run", "--provider", "offline", "--rounds", "2", "--drafts", "4", "--keep",
                "4", "--jobs", "1", "--seed", "2", cwd=ws)
        nodes = self.nodes(ws)
        titles = [n["title"] for n in nodes]
        # the explorer's idea joined the planner's and ran once; its repeat
        # in the second round (the same change) was dropped as already tried
        self.assertEqual(titles.count("Explorer: seven epochs"), 1, titles)
        con = self.db(ws)
        notes = [r[0] for r in con.execute("SELECT text FROM memory_items WHERE kind = 'note'")]
        self.assertEqual(len(notes), 2, notes)  # one review per expansion
        dropped = con.execute("SELECT count(*) FROM research_events WHERE decision = 'dropped'"
                              " AND text = 'Explorer: seven epochs'").fetchone()[0]
        self.assertEqual(dropped, 1)
        con.close()
        # the analyses joined the skeptic's insight to the built-in critic's
        shown = json.loads(self.ok("show", "n1", "--json", cwd=ws).stdout)
        self.assertIn("the skeptic doubts it.", shown["insight"])
        self.assertNotEqual(shown["insight"], "the skeptic doubts it.")


class TestInterruptAndResume(RunCase):
    ARGS = ("run", "--provider", "offline", "--rounds", "3", "--jobs", "2", "--seed", "11",
            "--json")

    def start(self, ws):
        env = dict(self.env)
        return subprocess.Popen([BIN, *self.ARGS], cwd=ws, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def wait_for(self, proc, predicate):
        """Reads events until predicate(event) holds; returns them."""
        seen = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            e = json.loads(line)
            seen.append(e)
            if predicate(e):
                return seen
        self.fail(f"the event never came; saw {[e['event'] for e in seen]}")

    def finish_and_check(self, ws, head, expect_nodes=None):
        r = self.ok("resume", "--json", cwd=ws)
        ev = self.events(r.stdout)
        self.assertEqual(ev[0]["event"], "resumed")
        self.assertEqual(ev[-1]["status"], "finished")
        nodes = self.check_ledger(ws, "r1", head)
        self.check_store(ws, "r1")
        for n in nodes:
            self.assertNotIn(n["status"], ("pending", "running"))
        return nodes

    def test_kill_9_at_several_moments(self):
        # killed while the first experiments run, right after a round is
        # expanded, and right after an experiment was recorded
        moments = [lambda e: e["event"] == "experiment_started",
                   lambda e: e["event"] == "expanded" and e["node"] != "n0",
                   lambda e: e["event"] == "experiment" and e["node"] == "n2"]
        reference = None
        for i, moment in enumerate(moments):
            with self.subTest(moment=i):
                ws = self.workspace(f"ws{i}")
                head = self.git(ws, "rev-parse", "HEAD").strip()
                proc = self.start(ws)
                seen = self.wait_for(proc, moment)
                proc.kill()
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
                st = json.loads(self.ok("status", "--json", cwd=ws).stdout)
                # it never saved its end, but no process holds the run
                self.assertEqual(st["status"], "interrupted")
                self.assertIn("without saving", st["stop_reason"])
                before = {n["id"]: n["commit"] for n in self.nodes(ws) if n["commit"]}
                nodes = self.finish_and_check(ws, head)
                after = {n["id"]: n["commit"] for n in nodes}
                for k, c in before.items():  # nothing recorded was redone
                    self.assertEqual(after[k], c)
                # a commit reported before the kill is the one recorded, even
                # when its ref was not written yet
                for e in seen:
                    if e["event"] == "experiment":
                        self.assertEqual(after[e["node"]], e["commit"])
                # the same seed gives the same tree as an uninterrupted run
                shape = [(n["id"], n["parent"]) for n in nodes]
                if reference is None:
                    ref_ws = self.workspace("reference")
                    self.ok(*self.ARGS, cwd=ref_ws)
                    reference = [(n["id"], n["parent"]) for n in self.nodes(ref_ws)]
                self.assertEqual(len(shape), len(reference))

    def test_ctrl_c_saves_and_resume_continues(self):
        ws = self.workspace()
        head = self.git(ws, "rev-parse", "HEAD").strip()
        proc = self.start(ws)
        self.wait_for(proc, lambda e: e["event"] == "experiment" and e["node"] != "n0")
        # the run is locked while a process drives it
        busy = self.thalamus("resume", "r1", cwd=ws)
        self.assertEqual(busy.returncode, 1)
        self.assertIn("run 'r1' is in use by another thalamus process", busy.stderr)
        self.assertEqual(json.loads(self.ok("status", "--json", cwd=ws).stdout)["status"],
                         "running")
        # the processes this run started (sandboxes and their experiments)
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("interrupted: continue with 'thalamus resume r1'", err)
        st = json.loads(self.ok("status", "--json", cwd=ws).stdout)
        self.assertEqual(st["status"], "interrupted")
        self.assertIn("interrupted", st["stop_reason"])
        self.assertIn("resume r1", self.ok("status", cwd=ws).stdout)
        # no sandbox or experiment process of this run is left behind (other
        # tests may be running experiments of their own meanwhile)
        self.assertEqual([pid for pid in started if alive(pid)], [])
        self.finish_and_check(ws, head)

    def test_commit_made_but_not_recorded_is_found(self):
        ws = self.workspace()
        head = self.git(ws, "rev-parse", "HEAD").strip()
        self.ok("run", "--provider", "offline", "--rounds", "1", "--seed", "5", cwd=ws)
        nodes = self.nodes(ws)
        victim, lost = nodes[2], nodes[3]
        commits_before = self.git(ws, "rev-list", "--count",
                                  "--glob=refs/thalamus/runs/r1/*").strip()
        # n2 as if killed between its ref and the transaction recording it;
        # n3 as if killed while its commit was only in memory (the loop
        # writes a commit and its ref once the next experiment has started)
        self.git(ws, "update-ref", "-d", "refs/thalamus/runs/r1/n3")
        con = self.db(ws)
        con.execute("UPDATE research_nodes SET state = 'committing', commit_id = NULL"
                    " WHERE run = 'r1' AND id IN (2, 3)")
        con.execute("UPDATE research_runs SET status = 'running' WHERE id = 'r1'")
        con.commit()
        con.close()
        time.sleep(1.1)  # a commit made again now, not when n3 ended, would differ
        self.ok("resume", cwd=ws)
        after = self.check_ledger(ws, "r1", head)
        self.assertEqual(after[2]["commit"], victim["commit"])
        # made again from the store's record: the same commit as before
        self.assertEqual(after[3]["commit"], lost["commit"])
        self.assertEqual(self.git(ws, "rev-list", "--count",
                                  "--glob=refs/thalamus/runs/r1/*").strip(), commits_before)
        self.check_store(ws, "r1")

    def test_notes_left_unwritten_are_written_on_resume(self):
        # notes are written after the commits, while the next experiment
        # runs; a session that ended before writing them leaves commits
        # without notes, which the next session writes, together
        ws = self.workspace()
        head = self.git(ws, "rev-parse", "HEAD").strip()
        self.ok("run", "--provider", "offline", "--rounds", "1", "--seed", "5", cwd=ws)
        self.git(ws, "update-ref", "-d", "refs/notes/thalamus")
        con = self.db(ws)
        con.execute("UPDATE research_runs SET status = 'running' WHERE id = 'r1'")
        con.commit()
        con.close()
        self.ok("resume", cwd=ws)
        self.check_ledger(ws, "r1", head)  # every experiment has its note again
        self.assertEqual(self.git(ws, "rev-list", "--count", "refs/notes/thalamus").strip(), "1")


class TestBrokenWorkspace(RunCase):
    def in_namespace(self, script):
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("unshare -rm is not available here")
        return subprocess.run(["unshare", "-rm", "sh", "-c", script], env=self.env,
                              capture_output=True, text=True, timeout=120)

    def test_full_disk_gives_a_clear_error_and_a_resumable_run(self):
        ws = self.workspace(extra_lua=' cfg.sandbox.isolation = "none"')
        runs = os.path.join(ws, ".thalamus", "runs")
        os.makedirs(runs, exist_ok=True)
        r = self.in_namespace(
            f"mount -t tmpfs -o size=8k tmpfs '{runs}' && cd '{ws}' && "
            f"'{BIN}' run --provider offline --rounds 1; echo exit=$?")
        self.assertIn("exit=1", r.stdout, r.stderr)
        self.assertIn("No space left on device", r.stderr)
        self.assertIn("thalamus resume r1", r.stderr)
        self.assertNotIn("runtime error", r.stderr)
        st = json.loads(self.ok("status", "--json", cwd=ws).stdout)
        self.assertEqual(st["status"], "interrupted")
        # with room again, the run continues
        self.ok("resume", cwd=ws)
        self.check_store(ws, "r1")

    def test_read_only_workspace_gives_a_clear_error(self):
        ws = self.workspace()
        self.ok("config", cwd=ws)
        r = self.in_namespace(
            f"mount --bind '{ws}' '{ws}' && mount -o remount,bind,ro '{ws}' && cd '{ws}' && "
            f"'{BIN}' run --provider offline --rounds 1; echo exit=$?")
        self.assertIn("exit=1", r.stdout, r.stderr)
        self.assertRegex(r.stderr, r"(?i)read-only|readonly")
        self.assertNotIn("runtime error", r.stderr)


if __name__ == "__main__":
    unittest.main()

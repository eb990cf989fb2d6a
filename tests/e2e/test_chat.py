"""End-to-end tests of `thalamus chat` and of the review gates of the
research loop (`thalamus run --review`, loop.autonomy, decisions files).

Chat sessions are scripted through standard input (one command a line, no
terminal), offline and against the scripted fake model server, which
records what the planner was asked; one session runs on a pseudo-terminal
to check line editing's history file. The review gates run real offline
loops in small workspaces, and the tests check with the system git and
sqlite3 that a vetoed idea is never committed, that an edited idea's
parameters reach the commit, and that every decision is in the commit
message, in memory and in the report's run document."""
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import time
import unittest

from fake_llm import FakeLLM, system_of, user_of
from harness import BIN
from test_run import RunCase, can_isolate


def reply(obj):
    return {"reply": json.dumps(obj), "usage": [50, 10]}


EDITOR = """import json, sys
idea = json.load(open(sys.argv[1]))
idea["title"] = "Edited in the editor"
idea.setdefault("params", {})["epochs"] = 9
json.dump(idea, open(sys.argv[1], "w"))
"""


class Terminal:
    """A thalamus process on a pseudo-terminal."""

    def __init__(self, args, cwd, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execve(BIN, [BIN, *args], env)
        self.out = b""
        self.seen = 0  # what read_until consumed

    def read_until(self, marker, timeout=60):
        """Reads until marker appears after what earlier calls consumed
        (answers are typed only once the program asks: line editing may
        discard what was typed ahead)."""
        end = time.time() + timeout
        while marker not in self.out[self.seen:] and time.time() < end:
            r, _, _ = select.select([self.fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.out += chunk
        at = self.out.find(marker, self.seen)
        if at < 0:
            return False
        self.seen = at + len(marker)
        return True

    def send(self, text):
        os.write(self.fd, text.encode())

    def wait(self, timeout=120):
        self.read_until(b"\xff", timeout=timeout)  # until it exits
        end = time.time() + 30
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > end:
                os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                break
            time.sleep(0.1)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


class ChatCase(RunCase):
    def editor(self):
        path = os.path.join(self.tmp, "edit.py")
        with open(path, "w") as f:
            f.write(EDITOR)
        return f"python3 {path}"

    def small(self, name="ws", extra=""):
        """A classifier workspace with tiny budgets (two drafts, one round)."""
        return self.workspace(name, extra_lua=(
            "cfg.loop = { rounds = 1, ideas = 3, drafts = 2, keep = 1, jobs = 2,"
            " debug_attempts = 0 } " + extra))

    def chat(self, ws, *lines, env=None):
        return self.thalamus("chat", cwd=ws, stdin="".join(l + "\n" for l in lines), env=env)

    def nodes_of(self, ws, run):
        return json.loads(self.ok("log", run, "--json", cwd=ws).stdout)["nodes"]

    def message(self, ws, commit):
        return self.git(ws, "log", "-1", "--format=%B", commit)

    def human_notes(self, ws):
        con = sqlite3.connect(os.path.join(ws, ".thalamus", "memory.db"))
        rows = con.execute("SELECT text, payload FROM memory_episodes WHERE kind = 'human_note'"
                           " ORDER BY id").fetchall()
        con.close()
        return [(t, json.loads(p) if p else None) for t, p in rows]

    def document(self, ws, run):
        out = json.loads(self.ok("report", run, "--json", cwd=ws).stdout)
        with open(out["document"]) as f:
            return json.load(f)


class TestChatOffline(ChatCase):
    def test_scripted_session_covers_every_command(self):
        ws = self.small()
        r = self.chat(ws,
                      "/help",
                      "/status",
                      "/ideas",
                      "/veto 1 the network is big enough",
                      "/approve 2",
                      "/edit 3 epochs=7 title=\"Seven epochs\"",
                      "/note prefer small and fast networks",
                      "/memory fast networks",
                      "what should I try next?",
                      "/vetto 2",
                      "/run 1",
                      "/status",
                      "/log",
                      "/show n1",
                      "/quit",
                      "/status")  # never reached
        out, err = r.stdout, r.stderr
        self.assertNotIn("runtime error", err)
        # one failed command (the typo): exit status 1, with a suggestion
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("unknown command '/vetto'; did you mean '/veto'?", err)
        # no prompt and no colour on a pipe
        self.assertNotIn("thalamus>", out)
        self.assertNotIn("\033[", out)
        help_text = out[:out.index("/help, /quit") + len("/help, /quit")]
        for cmd in ("/ideas", "/approve", "/veto", "/edit", "/note", "/run", "/status", "/log",
                    "/show", "/memory", "/help", "/quit"):
            self.assertIn(cmd, help_text)
        self.assertIn("no run yet", err)  # /status before any run
        ideas = re.findall(r"^(\d+)\. (.+?)  \[proposed, for n0\]", out, re.M)
        self.assertEqual([n for n, _ in ideas], ["1", "2", "3"], out)
        titles = {n: t for n, t in ideas}
        self.assertIn("vetoed idea 1: the network is big enough", out)
        self.assertIn("approved idea 2", out)
        self.assertIn("3. Seven epochs  [edited, for n0]", out)
        self.assertIn("noted", out)
        self.assertRegex(out, r"note +Note of the human: prefer small and fast networks")
        # the offline answer: the state and the offline planner's suggestions
        self.assertIn("offline: no model is configured", out)
        self.assertIn("Task: classifier, maximize accuracy", out)
        self.assertIn("Notes of the human:\n  - prefer small and fast networks", out)
        self.assertIn(f"Ideas the human vetoed:\n  - {titles['1']} (the network is big enough)",
                      out)
        self.assertIn("Suggestions of the offline planner", out)
        # /run: the approved and edited ideas run first, as drafts of the baseline
        self.assertIn("2 approved ideas go first", out)
        nodes = self.nodes_of(ws, "r1")
        by_title = {n["title"]: n for n in nodes}
        self.assertIn(titles["2"], by_title)
        self.assertIn("Seven epochs", by_title)
        edited = by_title["Seven epochs"]
        self.assertEqual(edited["params"]["epochs"], 7)
        self.assertEqual(edited["parent"], "n0")
        # the vetoed idea never ran, and nothing with its title either
        self.assertNotIn(titles["1"], by_title)
        # decisions: commit messages, the run document, memory
        self.assertIn("Review: idea edited by human (in thalamus chat)",
                      self.message(ws, edited["commit"]))
        self.assertIn("Review: idea approved by human",
                      self.message(ws, by_title[titles["2"]]["commit"]))
        doc = self.document(ws, "r1")
        decisions = [(d["decision"], d["reason"]) for d in doc["decisions"]]
        self.assertIn(("edited by human", "'Seven epochs': in thalamus chat"), decisions)
        notes = self.human_notes(ws)
        vetoes = [p for _, p in notes if p and p.get("decision") == "vetoed"]
        self.assertEqual(vetoes[0]["title"], titles["1"])
        self.assertEqual(vetoes[0]["reason"], "the network is big enough")
        self.assertTrue(any(p and p.get("note") for _, p in notes))
        # the review commands after the run
        self.assertIn("run r1  finished", out)
        self.assertRegex(out, r"n0 +ok")
        self.assertIn("Diff against the parent", out)
        # no history file without a terminal
        self.assertFalse(os.path.exists(os.path.join(ws, ".thalamus", "chat_history")))

    def test_run_continues_an_interrupted_run_with_the_approved_ideas(self):
        ws = self.small()
        # a run stopped by its experiment limit before its round was done
        # stays resumable: interrupt one with Ctrl-C instead
        env = {}
        p = subprocess.Popen([BIN, "chat"], cwd=ws, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**self.env, **env})
        p.stdin.write("/run 3\n")
        p.stdin.flush()
        # wait for the first experiment to start, then Ctrl-C the run
        line, seen = "", ""
        deadline = time.time() + 60
        while time.time() < deadline and "started from" not in line:
            line = p.stdout.readline()
            seen += line
        self.assertIn("started from", seen)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate("/status\n/ideas\n/approve 1\n/run 1\n/log\n", timeout=120)
        out = seen + out
        self.assertNotIn("runtime error", err)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn("the run is interrupted; /run continues it", out)
        self.assertIn("interrupted", out.split("the run is interrupted")[1])
        # the second /run resumed r1 (no r2) and ran the approved idea
        self.assertIn("resuming r1", out)
        runs = json.loads(self.ok("runs", "--json", cwd=ws).stdout)
        self.assertEqual([x["id"] for x in runs], ["r1"])
        title = re.findall(r"^1\. (.+?)  \[proposed, for n\d+ of r1\]", out, re.M)[0]
        nodes = self.nodes_of(ws, "r1")
        ran = [n for n in nodes if n["commit"] and "Review: idea approved by human" in
               self.message(ws, n["commit"])]
        self.assertEqual([n["title"] for n in ran], [title], nodes)
        self.assertNotIn(ran[0]["status"], ("pending", "running"))
        doc = self.document(ws, "r1")
        self.assertIn("approved by human", [d["decision"] for d in doc["decisions"]])

    def test_terminal_session_edits_in_the_editor_and_keeps_its_history(self):
        ws = self.small()
        t = Terminal(["chat"], ws, {**self.env, "TERM": "dumb", "EDITOR": self.editor()})
        for line, answer in (("/note kept in the history", b"noted"),
                             ("/ideas", b"/run runs the approved ones"),
                             ("/edit 1", b"edited idea 1"),
                             ("/quit", None)):
            self.assertTrue(t.read_until(b"thalamus> "), t.out)
            t.send(line + "\r")
            if answer:
                self.assertTrue(t.read_until(answer), t.out)
        self.assertEqual(t.wait(), 0, t.out)
        out = t.out.decode(errors="replace")
        self.assertIn("thalamus chat", out)
        self.assertIn("Edited in the editor", out)
        self.assertIn("[edited, for n0]", out)
        with open(os.path.join(ws, ".thalamus", "chat_history")) as f:
            history = f.read().replace("\\040", " ")  # libedit's escaped spaces
        self.assertIn("/note kept in the history\n/ideas\n/edit 1\n/quit", history)


class TestChatWithModel(ChatCase):
    def setUp(self):
        super().setUp()
        self.asked = 0
        self.fake = FakeLLM(default=self.respond)

    def tearDown(self):
        self.fake.close()
        super().tearDown()

    def respond(self, record):
        system = system_of(record)
        if "planner of an automated research loop" in system:
            self.asked += 1
            if self.asked == 1:
                return reply({"ideas": [
                    {"title": "Wider hidden layer", "hypothesis": "More units fit the spirals.",
                     "changes": ["hidden_units 24"], "rationale": "capacity",
                     "params": {"hidden_units": 24}},
                    {"title": "Lower learning rate", "hypothesis": "Smaller steps converge.",
                     "changes": ["learning_rate 0.01"], "rationale": "stability",
                     "params": {"learning_rate": 0.01}}]})
            # the vetoed idea again, and a new one: only the new one is shown
            return reply({"ideas": [
                {"title": "Wider hidden layer", "hypothesis": "Still more units.",
                 "changes": ["hidden_units 24"], "rationale": "capacity",
                 "params": {"hidden_units": 24}},
                {"title": "Polynomial features", "hypothesis": "poly2 separates spirals.",
                 "changes": ["features poly2"], "rationale": "shape",
                 "params": {"features": "poly2"}}]})
        if "reviewer" in system or "review" in system:
            return reply({"scores": [{"feasibility": 8, "novelty": 6, "expected_gain": 5},
                                     {"feasibility": 7, "novelty": 7, "expected_gain": 6}]})
        if "talking with the human" in system:
            return {"reply": "Try polynomial features next.", "usage": [80, 8]}
        return reply({})

    def test_a_vetos_reason_reaches_the_next_planner_prompt(self):
        ws = self.small(extra=(
            f'cfg.llm = {{ provider = "openai", model = "fake-model",'
            f' base_url = "{self.fake.url}/v1", max_retries = 0 }}'))
        env = {"OPENAI_API_KEY": "sk-test"}
        r = self.chat(ws,
                      "/ideas",
                      "/veto 1 the model is wide enough already",
                      "/note keep every run under a second",
                      "/ideas",
                      "what next?",
                      env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        planner = [q for q in self.fake.requests
                   if "planner of an automated research loop" in system_of(q)]
        self.assertEqual(len(planner), 2)
        self.assertNotIn("the model is wide enough already", user_of(planner[0]))
        second = user_of(planner[1])
        self.assertIn("vetoed idea: Wider hidden layer", second)
        self.assertIn("the model is wide enough already", second)
        self.assertIn("keep every run under a second", second)
        # the vetoed idea proposed again is dropped; the new one is idea 3
        self.assertIn("3. Polynomial features", r.stdout)
        self.assertEqual(r.stdout.count("Wider hidden layer  [proposed"), 1, r.stdout)
        # free text: the model's answer, grounded in TASK.md and the state
        self.assertIn("Try polynomial features next.", r.stdout)
        talk = [q for q in self.fake.requests if "talking with the human" in system_of(q)]
        self.assertEqual(len(talk), 1)
        self.assertIn("Two-spirals classifier", system_of(talk[0]))
        self.assertIn("Ideas the human vetoed", system_of(talk[0]))
        self.assertEqual(user_of(talk[0]), "what next?")
        self.assertTrue(talk[0]["json"].get("stream"))


class TestReviewGates(ChatCase):
    def test_decisions_file_vetoes_edits_and_approves(self):
        ws = self.small()
        decisions = os.path.join(self.tmp, "decisions.jsonl")
        with open(decisions, "w") as f:
            f.write('# the first idea is vetoed, the next one edited\n')
            f.write(json.dumps({"idea": 1, "decision": "veto",
                                "reason": "that change is too risky"}) + "\n")
            f.write(json.dumps({"idea": 2, "decision": "edit", "params": {"epochs": 6},
                                "reason": "shorter"}) + "\n")
            f.write(json.dumps({"default": "approve"}) + "\n")
        head = self.git(ws, "rev-parse", "HEAD").strip()
        r = self.ok("run", "--seed", "5", "--rounds", "1", "--drafts", "3", "--review",
                    "--review-file", decisions, "--json", cwd=ws, stdin="")
        self.assertEqual(self.events(r.stdout)[-1]["event"], "finished")
        nodes = self.check_ledger(ws, "r1", head)
        doc = self.document(ws, "r1")
        vetoed = [d for d in doc["decisions"] if d["decision"] == "vetoed by human"]
        self.assertEqual(len(vetoed), 1, doc["decisions"])
        title = vetoed[0]["reason"].split("'")[1]
        self.assertEqual(vetoed[0]["reason"], f"'{title}': that change is too risky")
        # the vetoed idea was never committed
        log = self.git(ws, "log", "--format=%s", "--glob=refs/thalamus/runs/r1/*")
        self.assertNotIn(title, log.splitlines())
        self.assertNotIn(title, [n["title"] for n in nodes])
        # the edited one ran with its new parameter, and says so
        edited = [n for n in nodes if n["params"] and n["params"].get("epochs") == 6]
        self.assertEqual(len(edited), 1, nodes)
        msg = self.message(ws, edited[0]["commit"])
        self.assertIn("Review: idea edited by human (shorter)", msg)
        self.assertIn("epochs = 6 (set in the review)", msg)
        diff = self.git(ws, "diff", head, edited[0]["commit"], "--", "experiment/params.json")
        self.assertIn('+  "epochs": 6', diff)
        self.assertIn("edited by human", [d["decision"] for d in doc["decisions"]])
        # the third idea is not in the file: approved by the default
        rest = [n for n in nodes if n["parent"] == "n0" and n is not edited[0]]
        self.assertEqual(len(rest), 1, nodes)
        self.assertIn("Review: idea approved by default", self.message(ws, rest[0]["commit"]))
        # the report shows the decisions too
        out = json.loads(self.ok("report", "r1", "--json", cwd=ws).stdout)
        with open(out["markdown"]) as f:
            self.assertIn("vetoed by human", f.read())
        # memory: the veto steers the planners (human_note and the idea bank)
        notes = self.human_notes(ws)
        self.assertTrue(any(p and p.get("decision") == "vetoed" and
                            p.get("reason") == "that change is too risky" for _, p in notes))

    def test_review_code_veto_fails_the_experiment_with_the_reason(self):
        ws = self.small(extra='cfg.loop.autonomy = "review-code"')
        decisions = os.path.join(ws, "decisions.jsonl")
        with open(decisions, "w") as f:
            f.write(json.dumps({"code": "n1", "decision": "veto",
                                "reason": "do not touch the optimiser"}) + "\n")
        self.git(ws, "add", "decisions.jsonl")
        self.git(ws, "commit", "-qm", "decisions")
        # loop.review_file is relative to the workspace
        path = os.path.join(ws, "thalamus.lua")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("return cfg", 'cfg.loop.review_file = "decisions.jsonl"\n'
                                 "return cfg"))
        self.git(ws, "commit", "-qam", "review file")
        self.ok("run", "--seed", "5", "--json", cwd=ws, stdin="")
        nodes = {n["id"]: n for n in self.nodes_of(ws, "r1")}
        self.assertEqual(nodes["n1"]["status"], "failed")
        self.assertEqual(nodes["n1"]["reason"],
                         "the code change was vetoed by the human: do not touch the optimiser")
        msg = self.message(ws, nodes["n1"]["commit"])
        self.assertIn("Review: idea approved by default", msg)
        self.assertIn("Review: code vetoed by human (do not touch the optimiser)", msg)
        self.assertEqual(nodes["n2"]["status"], "ok")
        self.assertIn("Review: code approved by default", self.message(ws, nodes["n2"]["commit"]))

    def test_review_code_edit_runs_and_commits_the_human_s_files(self):
        ws = self.small(extra='cfg.loop.autonomy = "review-code"')
        with open(os.path.join(ws, "experiment", "params.json")) as f:
            params = json.load(f)
        params["epochs"] = 3
        params["learning_rate"] = 0.2
        edited = json.dumps(params, indent=2) + "\n"
        decisions = os.path.join(ws, "decisions.jsonl")
        with open(decisions, "w") as f:
            f.write(json.dumps({"code": "n1", "decision": "edit", "reason": "shorter and faster",
                                "files": {"params.json": edited,
                                          "notes/REVIEW.txt": "checked by a human\n"}}) + "\n")
        self.ok("run", "--seed", "5", "--json", "--review-file", decisions, cwd=ws, stdin="")
        nodes = {n["id"]: n for n in self.nodes_of(ws, "r1")}
        n1 = nodes["n1"]
        self.assertEqual(n1["status"], "ok")
        # the experiment ran the edited files, and the commit holds them
        self.assertEqual(n1["params"]["epochs"], 3)
        self.assertEqual(n1["params"]["learning_rate"], 0.2)
        self.assertEqual(self.git(ws, "show", n1["commit"] + ":experiment/params.json"), edited)
        self.assertEqual(self.git(ws, "show", n1["commit"] + ":experiment/notes/REVIEW.txt"),
                         "checked by a human\n")
        self.assertIn("Review: code edited by human (shorter and faster)",
                      self.message(ws, n1["commit"]))
        self.assertIn("Review: code approved by default", self.message(ws, nodes["n2"]["commit"]))
        doc = self.document(ws, "r1")
        self.assertTrue(any(d["decision"] == "code edited by human" for d in doc["decisions"]), doc)
        # a path leaving the experiment is refused before anything runs
        bad = os.path.join(ws, "bad.jsonl")
        with open(bad, "w") as f:
            f.write(json.dumps({"code": "n1", "decision": "edit",
                                "files": {"../thalamus.lua": "return {}"}}) + "\n")
        ws2 = self.small(name="ws2", extra='cfg.loop.autonomy = "review-code"')
        r = self.thalamus("run", "--seed", "5", "--review-file", bad, cwd=ws2, stdin="")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("the path must be relative to the experiment", r.stderr)
        with open(os.path.join(ws2, "thalamus.lua")) as f:
            self.assertNotEqual(f.read(), "return {}")

    def test_review_on_a_terminal_asks_about_each_idea(self):
        ws = self.small()
        t = Terminal(["run", "--review", "--seed", "5", "--rounds", "1"], ws,
                     {**self.env, "TERM": "dumb", "EDITOR": self.editor()})
        self.assertTrue(t.read_until(b"[a/v/e] (a): "), t.out)
        first = re.search(rb" 1\. (.+?)(\x1b\[0m)?  \(critic", t.out)
        t.send("v\r")
        self.assertTrue(t.read_until(b"why"), t.out)
        t.send("not this one\r")
        self.assertTrue(t.read_until(b"vetoed"), t.out)
        self.assertTrue(t.read_until(b"[a/v/e] (a): "), t.out)
        t.send("e\r")
        self.assertEqual(t.wait(), 0, t.out)
        self.assertIsNotNone(first, t.out)
        title = first.group(1).decode()
        nodes = self.nodes_of(ws, "r1")
        self.assertEqual([n["title"] for n in nodes], ["Baseline", "Edited in the editor"],
                         t.out)
        self.assertEqual(nodes[1]["params"]["epochs"], 9)
        self.assertIn("Review: idea edited by human", self.message(ws, nodes[1]["commit"]))
        doc = self.document(ws, "r1")
        self.assertIn(("vetoed by human", f"'{title}': not this one"),
                      [(d["decision"], d["reason"]) for d in doc["decisions"]])

    def test_ctrl_c_at_a_question_interrupts_the_run(self):
        ws = self.small()
        t = Terminal(["run", "--review", "--seed", "5"], ws, {**self.env, "TERM": "dumb"})
        self.assertTrue(t.read_until(b"[a/v/e] (a): "), t.out)
        t.send("\x03")  # Ctrl-C on the terminal
        self.assertEqual(t.wait(), 130, t.out)
        self.assertIn(b"interrupted: continue with 'thalamus resume r1'", t.out)
        # nothing undecided was kept
        self.assertEqual([n["id"] for n in self.nodes_of(ws, "r1")], ["n0"])
        st = json.loads(self.ok("status", "--json", cwd=ws).stdout)
        self.assertEqual(st["status"], "interrupted")

    def test_review_without_terminal_or_file_fails_fast(self):
        ws = self.small()
        start = time.time()
        r = self.thalamus("run", "--review", cwd=ws, stdin="")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--review asks a human to review, but standard input is not a terminal",
                      r.stderr)
        self.assertIn("--review-file FILE", r.stderr)
        self.assertLess(time.time() - start, 30)
        # nothing was started
        self.assertIn("no run yet", self.ok("runs", cwd=ws).stdout)
        # the same from the configuration, and a malformed decisions file
        path = os.path.join(ws, "thalamus.lua")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("return cfg", 'cfg.loop.autonomy = "review-ideas"\nreturn cfg'))
        r = self.thalamus("run", cwd=ws, stdin="")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn('loop.autonomy = "review-ideas" asks a human', r.stderr)
        bad = os.path.join(self.tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"idea": 1, "decision": "maybe"}\n')
        r = self.thalamus("run", "--review-file", bad, cwd=ws, stdin="")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"{bad}:1: \"decision\" must be \"approve\", \"veto\" or \"edit\"",
                      r.stderr)


if __name__ == "__main__":
    unittest.main()

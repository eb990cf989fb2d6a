"""The research loop with a model: a run against the scripted fake
OpenAI-compatible server in which the coder's first attempt crashes the
experiment, and the debug attempt, given the traceback, fixes it. Checks
what the loop sent to the model (the traceback in the debug prompt), the
tree (the debug attempt is a node of its own, child of the failed one), the
commits and the model named in their trailers."""
import json
import os
import re
import unittest

from fake_llm import FakeLLM, system_of, user_of
from test_run import RunCase, can_isolate

TRAIN = """import json

def score(p):
    return p["x"] * 2

p = json.load(open("params.json"))
json.dump({"score": score(p)}, open("results.json", "w"))
print("score", score(p))
"""

BROKEN = TRAIN.replace('return p["x"] * 2', 'return p["x"] * 2 / (p["x"] - p["x"])')
FIXED = TRAIN.replace('return p["x"] * 2', 'return p["x"] * 3')


def reply(obj):
    return {"reply": json.dumps(obj), "usage": [100, 20]}


def respond(record):
    system, user = system_of(record), user_of(record)
    if "planner" in system:
        return reply({"ideas": [{"title": "Triple the score",
                                 "hypothesis": "A larger factor raises the score.",
                                 "changes": ["multiply by 3 in score()"],
                                 "rationale": "score() doubles x; more is better here."}]})
    if "coder" in system:
        if "ZeroDivisionError" in user:
            return reply({"edits": [{"path": "train.py", "content": FIXED}],
                          "message": "remove the division by zero"})
        return reply({"edits": [{"path": "train.py", "content": BROKEN}],
                      "message": "scale the score"})
    if "reviewer" in system:
        return reply({"scores": [{"feasibility": 8, "novelty": 7, "expected_gain": 6}]})
    if "analyse" in system:
        return reply({"label": "improve", "insight": "A factor of 3 raises the score."})
    if "rank" in system:
        return reply({"scores": [5, 5, 5, 5, 5, 5, 5, 5]})
    return reply({})


class TestLlmRun(RunCase):
    def setUp(self):
        super().setUp()
        self.fake = FakeLLM(default=respond)

    def tearDown(self):
        self.fake.close()
        super().tearDown()

    def test_debug_attempt_gets_the_traceback_and_fixes_the_crash(self):
        ws = self.init_workspace()
        exp = os.path.join(ws, "experiment")
        for name in os.listdir(exp):
            os.remove(os.path.join(exp, name))
        with open(os.path.join(exp, "train.py"), "w") as f:
            f.write(TRAIN)
        with open(os.path.join(exp, "params.json"), "w") as f:
            f.write('{"x": 0.25}\n')
        isolation = "" if can_isolate(self.env) else 'isolation = "none",'
        with open(os.path.join(ws, "thalamus.lua"), "w") as f:
            f.write(f"""return {{
  task = {{ name = "toy", command = {{ "python3", "train.py" }}, metric = "score",
           goal = "maximize" }},
  sandbox = {{ timeout = 30, memory_mb = 512, {isolation} }},
  loop = {{ rounds = 1, drafts = 1, keep = 1, jobs = 1, debug_attempts = 1,
           debug_probability = 1 }},
  llm = {{ provider = "openai", model = "fake-model", base_url = "{self.fake.url}/v1",
          max_retries = 0 }},
}}
""")
        self.git(ws, "add", "-A")
        self.git(ws, "commit", "-qm", "toy task")
        head = self.git(ws, "rev-parse", "HEAD").strip()
        env = {"OPENAI_API_KEY": "sk-test"}
        r = self.ok("run", "--json", cwd=ws, env=env)
        ev = self.events(r.stdout)
        self.assertEqual(ev[-1]["event"], "finished", r.stderr)
        nodes = {n["id"]: n for n in self.nodes(ws)}
        self.assertEqual(nodes["n0"]["metric"], 0.5)
        # the first attempt crashed; the debug attempt is its child and runs
        self.assertEqual(nodes["n1"]["status"], "failed")
        self.assertEqual(nodes["n1"]["parent"], "n0")
        self.assertEqual(nodes["n2"]["kind"], "debug")
        self.assertEqual(nodes["n2"]["parent"], "n1")
        self.assertEqual(nodes["n2"]["status"], "ok")
        self.assertEqual(nodes["n2"]["metric"], 0.75)
        self.assertEqual(ev[-1]["best"], "n2")
        # the traceback reached the debug prompt, and only the debug prompt
        coder = [q for q in self.fake.requests if "coder" in system_of(q)]
        self.assertEqual(len(coder), 2)
        self.assertNotIn("ZeroDivisionError", user_of(coder[0]))
        debug_prompt = user_of(coder[1])
        self.assertIn("ZeroDivisionError", debug_prompt)
        self.assertIn("train.py", debug_prompt)
        self.assertIn("division by zero", debug_prompt)
        # commits: the failed one too, the fix builds on it, model in trailers
        self.check_commits(ws, head, nodes)
        shown = json.loads(self.ok("show", "n2", "--json", cwd=ws).stdout)
        self.assertIn('-    return p["x"] * 2 / (p["x"] - p["x"])', shown["diff"])
        self.assertIn('+    return p["x"] * 3', shown["diff"])
        self.assertEqual(shown["debug_history"][0]["node"], "n1")
        self.assertEqual(shown["debug_history"][0]["status"], "failed")
        text = self.ok("show", "n1", cwd=ws).stdout
        self.assertIn("ZeroDivisionError", text)  # the output tail
        # usage is per agent in the export, and the API key is nowhere
        st = json.loads(self.ok("status", "--json", cwd=ws).stdout)
        self.assertGreater(st["budget"]["tokens"], 0)
        for q in self.fake.requests:
            self.assertEqual(q["headers"].get("authorization"), "Bearer sk-test")
        log = self.git(ws, "log", "--format=%B", "--glob=refs/thalamus/runs/r1/*")
        self.assertNotIn("sk-test", log)

    def check_commits(self, ws, head, nodes):
        for nid in ("n1", "n2"):
            n = nodes[nid]
            msg = self.git(ws, "log", "-1", "--format=%B", n["commit"])
            self.assertIn("Thalamus-Model: openai/fake-model", msg)
            self.assertIn(f"Thalamus-Status: {n['status']}", msg)
        self.assertEqual(self.git(ws, "rev-parse", nodes["n1"]["commit"] + "^").strip(), head)
        self.assertEqual(self.git(ws, "rev-parse", nodes["n2"]["commit"] + "^").strip(),
                         nodes["n1"]["commit"])
        self.assertNotIn("Thalamus-Metric",
                         self.git(ws, "log", "-1", "--format=%B", nodes["n1"]["commit"]))
        self.assertRegex(self.git(ws, "log", "-1", "--format=%B", nodes["n2"]["commit"]),
                         re.compile(r"^Thalamus-Metric: score=0\.75$", re.M))


if __name__ == "__main__":
    unittest.main()

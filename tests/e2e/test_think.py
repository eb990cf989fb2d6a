"""thalamus think: Monte-Carlo tree search over thoughts. A user's problem
(the arithmetic puzzle of examples/problems) is solved through --problem
within a node budget; against the scripted fake model, the expansion
prompts carry what memory recalls, the facts the model lists are written
back into memory, and the best chain and answer are printed; without a
model the command says how to configure one."""
import json
import os
import re
import unittest
from fractions import Fraction

from fake_llm import FakeLLM
from harness import Case

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PUZZLE = os.path.join(SOURCE, "examples", "problems", "arithmetic.lua")


def evaluate_expression(text):
    """Evaluates '(7 - (8 / 8)) * 4' exactly, returning the value and the
    numbers it used."""
    tokens = re.findall(r"\d+|[()+\-*/]", text)
    pos = 0
    used = []

    def atom():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            v = expr()
            assert tokens[pos] == ")"
            pos += 1
            return v
        used.append(int(tok))
        return Fraction(int(tok))

    def term():
        nonlocal pos
        v = atom()
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]
            pos += 1
            rhs = atom()
            v = v * rhs if op == "*" else v / rhs
        return v

    def expr():
        nonlocal pos
        v = term()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]
            pos += 1
            rhs = term()
            v = v + rhs if op == "+" else v - rhs
        return v

    value = expr()
    assert pos == len(tokens), text
    return value, sorted(used)


class ProblemTest(Case):
    def test_arithmetic_puzzle_is_solved_within_a_node_budget(self):
        r = self.ok("think", "--problem", PUZZLE, "--json", "--iterations", "300")
        out = json.loads(r.stdout)
        self.assertEqual(out["stats"]["stop"], "goal")
        self.assertLessEqual(out["stats"]["nodes"], 1000)  # the whole tree has 2000+
        self.assertTrue(out["final"])
        self.assertEqual(out["max"], 1)
        expression, result = out["answer"].rsplit(" = ", 1)
        self.assertEqual(result, "24")
        value, used = evaluate_expression(expression)
        self.assertEqual(value, 24)
        self.assertEqual(used, [4, 7, 8, 8])
        self.assertEqual(len(out["chain"]), 3)  # three combinations of four numbers

    def test_trace_prints_the_tree_and_the_same_seed_the_same_search(self):
        a = self.ok("think", "--problem", PUZZLE, "--trace", "--seed", "5", "--jobs", "1")
        b = self.ok("think", "--problem", PUZZLE, "--trace", "--seed", "5", "--jobs", "1")
        self.assertEqual(a.stdout, b.stdout)
        self.assertIn("Search tree", a.stdout)
        self.assertRegex(a.stdout, r"\[0\] visits \d+  value [0-9.]+  max 1\.000  4, 7, 8, 8")
        self.assertRegex(a.stdout, r"\n    \[\d+\] visits")  # a second level
        self.assertIn("Answer:", a.stdout)
        self.assertIn("stopped by goal", a.stdout)

    def test_a_budget_stops_the_search_before_the_solution(self):
        out = json.loads(self.ok("think", "--problem", PUZZLE, "--json", "-n", "2",
                                 "--jobs", "1").stdout)
        self.assertEqual(out["stats"]["stop"], "iterations")
        self.assertEqual(out["stats"]["iterations"], 2)

    def test_a_broken_problem_is_reported(self):
        path = self.path("broken.lua")
        with open(path, "w") as f:
            f.write("return { expand = function() return {} end }\n")
        r = self.thalamus("think", "--problem", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("must return a table with expand and evaluate", r.stderr)
        with open(path, "w") as f:
            f.write("return { root = 1, expand = function(n) return { n.data + 1 } end,\n"
                    "  evaluate = function(n) error('cannot judge ' .. n.data) end }\n")
        r = self.thalamus("think", "--problem", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot judge 2", r.stderr)
        r = self.thalamus("think", "--problem", self.path("missing.lua"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.lua", r.stderr)


class ModelTest(Case):
    def test_without_a_model_it_says_how_to_get_one(self):
        r = self.thalamus("think", "Why is the sky blue?")
        self.assertEqual(r.returncode, 1)
        self.assertIn("'think' needs a model", r.stderr)
        self.assertIn("OPENAI_API_KEY", r.stderr)
        self.assertIn("--problem FILE.lua", r.stderr)
        self.assertEqual(r.stdout, "")
        r = self.thalamus("think")
        self.assertEqual(r.returncode, 2)

    def test_thoughts_with_recalled_memory_against_the_fake_model(self):
        ws = self.init_workspace()
        self.ok("memory", "add", "Rayleigh scattering makes air scatter short blue wavelengths "
                "far more than red ones", "--kind", "note", cwd=ws)

        def reply(record):
            content = json.dumps(record["json"]["messages"])
            if "Propose" in content:
                deep = "Sunlight is scattered" in content
                thoughts = [
                    {"text": "Sunlight is scattered by the molecules of the air",
                     "final": False, "confidence": 0.8},
                    {"text": "The sky reflects the oceans", "final": False,
                     "confidence": 0.1},
                ]
                if deep:
                    thoughts = [
                        {"text": "Blue light scatters most, so the sky looks blue",
                         "final": True, "answer": "Rayleigh scattering of blue light",
                         "confidence": 0.9},
                        {"text": "The sky is painted", "final": True, "answer": "paint",
                         "confidence": 0.05},
                    ]
                return {"reply": json.dumps({"thoughts": thoughts,
                                             "facts": ["Sunlight holds every visible colour"]})}
            # the critic judges the last thought of the chain
            prompt = record["json"]["messages"][-1]["content"]
            chain = prompt.split("<<<CHAIN\n", 1)[1].split("\nCHAIN>>>", 1)[0]
            last = chain.splitlines()[-1]
            score = 1
            if "Blue light scatters most" in last:
                score = 9
            elif "Sunlight is scattered" in last:
                score = 7
            return {"reply": json.dumps({"score": score, "reason": "checked"})}

        fake = FakeLLM(default=reply)
        self.addCleanup(fake.close)
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.url + "/v1",
               "THALAMUS_MODEL": "gpt-test"}
        r = self.ok("think", "Why is the sky blue?", "--json", "-n", "6", "-w", "2", "-d", "2",
                    cwd=ws, env=env)
        out = json.loads(r.stdout)
        self.assertEqual(out["answer"], "Rayleigh scattering of blue light")
        self.assertEqual(out["chain"], ["Sunlight is scattered by the molecules of the air",
                                        "Blue light scatters most, so the sky looks blue"])
        self.assertEqual(out["question"], "Why is the sky blue?")
        self.assertGreater(out["stats"]["tokens"], 0)

        prompts = [json.dumps(q["json"]["messages"]) for q in fake.requests]
        expansions = [p for p in prompts if "Propose" in p]
        evaluations = [p for p in prompts if "Rate how far" in p]
        self.assertGreaterEqual(len(expansions), 2)
        self.assertGreaterEqual(len(evaluations), 4)
        # what memory recalls for the chain is in every expansion prompt
        for p in expansions:
            self.assertIn("Rayleigh scattering makes air scatter short blue wavelengths", p)
            self.assertIn("<<<MEMORY", p)
        # the deeper expansion shows the chain so far
        self.assertTrue(any("Sunlight is scattered by the molecules" in p for p in expansions))
        # the fact the model listed was written back into memory
        found = self.ok("memory", "search", "visible colour", "--json", cwd=ws).stdout
        self.assertIn("Sunlight holds every visible colour", found)

        r = self.ok("think", "Why is the sky blue?", "--trace", "-n", "6", "-w", "2", "-d", "2",
                    cwd=ws, env=env)
        self.assertIn("Search tree", r.stdout)
        self.assertIn("Blue light scatters most, so the sky looks blue", r.stdout)
        self.assertIn("Answer: Rayleigh scattering of blue light", r.stdout)


if __name__ == "__main__":
    unittest.main()

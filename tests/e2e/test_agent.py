"""thalamus agent list / run / new: the built-in agents offline in a fresh
workspace (the planner's ideas stay in the search space, the coder's edits
land in the experiment and nothing else changes), workspace agents that
replace a built-in or fail with a Lua traceback (exit 1), inputs from
--input and stdin, the llm strategy against the fake model server, and the
starting files of `agent new`."""
import json
import os
import re
import signal
import subprocess

from fake_llm import FakeLLM
from harness import BIN, Case


class AgentCase(Case):
    def setUp(self):
        super().setUp()
        self.ws = self.init_workspace()

    def write(self, rel, text):
        path = os.path.join(self.ws, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def read(self, rel):
        with open(os.path.join(self.ws, rel)) as f:
            return f.read()

    def configure(self, section):
        """Adds a section (Lua text) to the workspace's thalamus.lua."""
        cfg = self.read("thalamus.lua").replace("loop = {", section + ",\n  loop = {")
        self.write("thalamus.lua", cfg)

    def run_agent(self, *args, **kw):
        return self.thalamus("agent", "run", *args, cwd=self.ws, **kw)


class AgentListTest(AgentCase):
    def test_list_shows_builtins_and_overrides(self):
        self.write("agents/critic.lua",
                   "return { name = 'critic', role = 'critic', description = 'my critic',\n"
                   "  run = function() end }\n")
        self.write("agents/skeptic.lua",
                   "return { name = 'skeptic', role = 'critic', run = function() end }\n")
        self.configure('agents = { extra = { review = { "skeptic" } } }')
        agents = {a["name"]: a for a in json.loads(self.ok("agent", "list", "--json",
                                                              cwd=self.ws).stdout)}
        self.assertEqual(set(agents), {"coder", "critic", "planner", "retriever", "skeptic"})
        self.assertEqual(agents["planner"]["source"], "built-in")
        self.assertEqual(agents["planner"]["strategy"], "offline")
        self.assertEqual(agents["planner"]["stages"], ["ideate"])
        self.assertEqual(agents["critic"]["source"], "agents/critic.lua")
        self.assertEqual(agents["critic"]["description"], "my critic")
        self.assertEqual(agents["skeptic"]["stages"], ["review"])
        text = self.ok("agent", "list", cwd=self.ws).stdout
        self.assertRegex(text, r"planner\s+planner\s+offline\s+built-in\s+ideate")

    def test_broken_agent_is_listed_with_its_error(self):
        self.write("agents/broken.lua", "return { name = 'broken', role = 'judge' }\n")
        r = self.thalamus("agent", "list", cwd=self.ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn("broken", r.stdout)
        self.assertIn("the field 'role' must be one of", r.stdout)
        self.assertIn("1 agent file could not be loaded", r.stderr)

    def test_outside_a_workspace(self):
        names = [a["name"] for a in json.loads(self.ok("agent", "list", "--json").stdout)]
        self.assertEqual(names, ["coder", "critic", "planner", "retriever"])


class AgentRunTest(AgentCase):
    def test_planner_offline_stays_in_the_space(self):
        r = self.run_agent("planner", "--input", '{"k": 4}')
        self.assertEqual(r.returncode, 0, r.stderr)
        ideas = json.loads(r.stdout)["ideas"]
        self.assertEqual(len(ideas), 4)
        space = self.config_json(self.ws)["values"]["task"]["search_space"]
        seen = set()
        for idea in ideas:
            params = idea["params"]
            for name, p in space.items():
                v = params[name]
                if "choices" in p:
                    self.assertIn(v, p["choices"])
                else:
                    self.assertGreaterEqual(v, p["min"])
                    self.assertLessEqual(v, p["max"])
            key = json.dumps(params, sort_keys=True)
            self.assertNotIn(key, seen)
            seen.add(key)
            self.assertTrue(idea["title"] and idea["hypothesis"] and idea["changes"])

    def test_coder_writes_the_params_file_only(self):
        inp = {"idea": {"title": "faster", "params": {"learning_rate": 0.2, "epochs": 30}},
               "dir": "experiment"}
        r = self.run_agent("coder", "--input", "-", stdin=json.dumps(inp))
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["applied"], ["params.json"])
        diff = self.git(self.ws, "diff", "--stat")
        self.assertIn("experiment/params.json | 4 ++--", diff)
        self.assertIn("1 file changed", diff)
        params = json.loads(self.read("experiment/params.json"))
        self.assertEqual(params["learning_rate"], 0.2)
        self.assertEqual(params["epochs"], 30)

    def test_critic_review_and_analyse(self):
        ideas = [{"title": "a", "params": {"learning_rate": 0.1}},
                 {"title": "b", "params": {"learning_rate": 0.01}}]
        out = json.loads(self.ok("agent", "run", "critic", "--input",
                                 json.dumps({"mode": "review", "ideas": ideas}),
                                 cwd=self.ws).stdout)
        self.assertEqual(sorted(out["ranking"]), [1, 2])
        self.assertEqual(len(out["scores"]), 2)
        out = json.loads(self.ok("agent", "run", "critic", "--input", json.dumps(
            {"mode": "analyse", "result": {"metric": 0.9}, "parent": {"metric": 0.68}}),
            cwd=self.ws).stdout)
        self.assertEqual(out["label"], "improve")

    def test_error_prints_the_traceback(self):
        self.write("agents/planner.lua",
                   "local function deeper(t) return t.x.y end\n"
                   "return { name = 'planner', role = 'planner',\n"
                   "  run = function(ctx, input) return deeper({}) end }\n")
        r = self.run_agent("planner")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertIn("agents/planner.lua:1: attempt to index a nil value (field 'x')", r.stderr)
        self.assertIn("stack traceback:", r.stderr)
        self.assertNotIn("runtime error", r.stderr)

    def test_wrong_output_names_the_field(self):
        self.write("agents/planner.lua",
                   "return { name = 'planner', role = 'planner',\n"
                   "  run = function() return { ideas = { { title = 'x' } } } end }\n")
        r = self.run_agent("planner")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ideas[1].hypothesis must be a non-empty string, not nothing", r.stderr)

    def test_usage_errors(self):
        r = self.run_agent("planner", "--input", "[1, 2]")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--input must be a JSON object", r.stderr)
        r = self.run_agent("nobody")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown agent 'nobody'", r.stderr)
        r = self.run_agent("critic", "--input", '{"mode": "judge"}')
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs mode", r.stderr)
        r = self.thalamus("agent", "fly", cwd=self.ws)
        self.assertEqual(r.returncode, 2)

    def test_endless_loop_is_stopped(self):
        self.write("agents/spin.lua",
                   "return { name = 'spin', role = 'tool', run = function() while true do end end }\n")
        self.configure("agents = { cpu_slice = 1000000 }")
        r = self.run_agent("spin")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ran more than 1000000 instructions without waiting", r.stderr)

    def test_ctrl_c_cancels_a_waiting_agent(self):
        # the agent says it started, then waits far longer than the test
        self.write("agents/nap.lua",
                   "local thalamus = require('thalamus')\n"
                   "return { name = 'nap', role = 'tool', run = function()\n"
                   "  thalamus.log.warn('napping')\n"
                   "  thalamus.sleep(600)\n"
                   "  return { woke = true }\n"
                   "end }\n")
        proc = subprocess.Popen([BIN, "agent", "run", "nap"], cwd=self.ws, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = ""
        while "napping" not in seen:
            line = proc.stderr.readline()
            self.assertTrue(line, "the agent never started: " + seen)
            seen += line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("interrupted: the agent was cancelled", err)
        self.assertNotIn("woke", out)

    def test_llm_strategy_against_the_fake_server(self):
        fake = FakeLLM()
        self.addCleanup(fake.close)
        fake.push({"reply": json.dumps({"ideas": [{
            "title": "Use random Fourier features", "hypothesis": "spirals need a kernel",
            "changes": ["features = rff"], "rationale": "the task", "params": {
                "features": "rff", "rff_dim": 999}}]})})
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.url + "/v1",
               "THALAMUS_MODEL": "gpt-test"}
        r = self.run_agent("planner", "--input", '{"k": 1}', "--run", "r1", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        idea = json.loads(r.stdout)["ideas"][0]
        self.assertEqual(idea["title"], "Use random Fourier features")
        self.assertEqual(idea["params"]["features"], "rff")
        self.assertEqual(idea["params"]["rff_dim"], 16)  # 999 is outside the space: dropped
        sent = fake.requests[0]["json"]
        text = json.dumps(sent["messages"])
        self.assertIn("Two-spirals classifier", text)  # TASK.md
        self.assertIn("<<<MEMORY", text)
        self.assertIn("FILE train.py", text)
        self.assertEqual(sent["model"], "gpt-test")
        usage = json.loads(self.ok("usage", "--json", "--run", "r1", cwd=self.ws).stdout)
        self.assertEqual(usage["by_caller"][0]["agent"], "planner")

    def test_agent_calls_another_and_waits(self):
        self.write("agents/boss.lua",
                   "local thalamus = require('thalamus')\n"
                   "return { name = 'boss', role = 'tool', run = function(ctx, input)\n"
                   "  local ok, err = pcall(function() thalamus.sleep(0.01) error('x') end)\n"
                   "  local outs = thalamus.agents.parallel{ { 'planner', { k = 1 } },\n"
                   "    { 'critic', { mode = 'analyse', result = { metric = 1 } } } }\n"
                   "  return { ideas = #outs[1].ideas, label = outs[2].label, caught = not ok }\n"
                   "end }\n")
        out = json.loads(self.ok("agent", "run", "boss", cwd=self.ws).stdout)
        self.assertEqual(out, {"caught": True, "ideas": 1, "label": "maintain"})


    def test_debug_log_says_what_each_call_took(self):
        """-v logs each agent call's time, and how much of it the agent ran:
        a wait (here a sleep, for a model elsewhere) is not running."""
        self.write("agents/napper.lua",
                   "local thalamus = require('thalamus')\n"
                   "return { name = 'napper', role = 'tool', run = function(ctx, input)\n"
                   "  thalamus.sleep(0.3)\n"
                   "  return { ok = true }\n"
                   "end }\n")
        r = self.ok("-v", "--log-json", "agent", "run", "napper", cwd=self.ws)
        took = [re.match(r"agent 'napper' answered after ([0-9.]+) ms, ([0-9.]+) ms of it running",
                         json.loads(line)["msg"]) for line in r.stderr.splitlines()]
        took = [m for m in took if m]
        self.assertEqual(len(took), 1, r.stderr)
        after, running = float(took[0].group(1)), float(took[0].group(2))
        # the event loop's timers count whole milliseconds: the 300 ms
        # sleep may end a little early, never much
        self.assertGreaterEqual(after, 290)
        self.assertLessEqual(running, after - 290)


class AgentNewTest(AgentCase):
    def test_new_writes_a_runnable_starting_file(self):
        for role, inp in [("critic", '{"mode": "review", "ideas": [{"title": "x"}]}'),
                          ("planner", '{"k": 1}'),
                          ("coder", '{"idea": {"title": "x", "params": {"epochs": 25}}}'),
                          ("retriever", '{"query": "spirals"}'),
                          ("tool", '{"text": "abc"}')]:
            name = "my_" + role
            r = self.ok("agent", "new", name, "--role", role, cwd=self.ws)
            path = r.stdout.strip()
            self.assertEqual(path, os.path.join(self.ws, "agents", name + ".lua"))
            src = self.read(os.path.join("agents", name + ".lua"))
            self.assertIn(f'name = "{name}"', src)
            self.assertTrue(src.startswith("-- " + name + ":"))
            r = self.run_agent(name, "--input", inp)
            self.assertEqual(r.returncode, 0, f"{role}: {r.stderr}")
        r = self.thalamus("agent", "new", "my_critic", "--role", "critic", cwd=self.ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn("exists already", r.stderr)
        r = self.thalamus("agent", "new", "x", "--role", "judge", cwd=self.ws)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown role 'judge'", r.stderr)
        r = self.thalamus("agent", "new", "9lives", "--role", "tool", cwd=self.ws)
        self.assertEqual(r.returncode, 2)


class AgentDocsTest(AgentCase):
    """Every example agent of docs/agents.md (a lua block that starts with
    `-- agents/NAME.lua`) runs as written, offline, in a fresh workspace."""

    def test_examples_run(self):
        docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "agents.md")
        with open(docs) as f:
            text = f.read()
        blocks = re.findall(r"```lua\n(-- agents/(\w+)\.lua\n.*?)```", text, re.S)
        self.assertGreaterEqual(len(blocks), 6)
        outputs = {}
        for source, name in blocks:
            self.write(f"agents/{name}.lua", source)
            r = self.run_agent(name)
            self.assertEqual(r.returncode, 0, f"docs example {name}: {r.stderr}")
            outputs[name] = json.loads(r.stdout)
        self.assertEqual(outputs["hello"]["greeting"], "hello from hello (offline)")
        self.assertEqual(outputs["ask_model"]["answer"], "no model configured")
        self.assertEqual(outputs["two_views"]["label"], "improve")
        self.assertEqual(outputs["two_views"]["waited"], "done waiting")
        self.assertTrue(outputs["note_taker"]["stored"])
        self.assertIn("params.json", outputs["file_stats"]["sizes"])
        self.assertIn("goes up with '..'", outputs["file_stats"]["refused"])
        self.assertTrue(outputs["greeter"]["missing_is_an_error"])
        self.assertIn("maximise accuracy (3 ideas)", outputs["greeter"]["text"])

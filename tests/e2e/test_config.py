"""thalamus config: layers, sources, workspace discovery, masking of secrets
and clear errors for a wrong thalamus.lua."""
import json
import os
import unittest

from harness import Case


class ConfigTest(Case):
    def write_config(self, d, text):
        with open(os.path.join(d, "thalamus.lua"), "w") as f:
            f.write(text)

    def test_workspace_values_and_sources(self):
        d = self.init_workspace()
        cfg = self.config_json(d)
        self.assertEqual(cfg["file"], os.path.join(os.path.realpath(d), "thalamus.lua"))
        task = cfg["values"]["task"]
        self.assertEqual(task["metric"], "accuracy")
        self.assertEqual(task["goal"], "maximize")
        self.assertTrue(task["search_space"])
        self.assertEqual(cfg["sources"]["task.metric"], "thalamus.lua")
        self.assertEqual(cfg["values"]["llm"]["provider"], "offline")
        self.assertEqual(cfg["sources"]["llm.provider"], "default (no API key in the environment)")

        text = self.ok("config", cwd=d).stdout
        self.assertRegex(text, r'task\.metric\s+"accuracy"\s+# thalamus\.lua')

    def test_found_from_subdirectory_and_with_C(self):
        d = self.init_workspace()
        sub = os.path.join(d, "experiment")
        self.assertEqual(self.config_json(sub)["file"], self.config_json(d)["file"])
        r = self.ok("-C", d, "config", "--json", cwd=self.tmp)
        self.assertEqual(json.loads(r.stdout)["values"]["task"]["metric"], "accuracy")

    def test_outside_workspace_shows_defaults(self):
        r = self.ok("config")
        self.assertIn("not in a workspace", r.stdout)
        cfg = self.config_json(self.tmp)
        self.assertIsNone(cfg["file"])

    def test_environment_overrides_and_masked_key(self):
        d = self.init_workspace()
        secret = "sk-test-0123456789abcdef"
        env = {"OPENAI_API_KEY": secret, "THALAMUS_MODEL": "local-model",
               "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}
        cfg = self.config_json(d, env=env)
        llm = cfg["values"]["llm"]
        self.assertEqual(llm["provider"], "openai")
        self.assertEqual(llm["model"], "local-model")
        self.assertEqual(llm["base_url"], "http://127.0.0.1:8080/v1")
        self.assertEqual(llm["api_key"], "(set)")
        self.assertEqual(cfg["sources"]["llm.base_url"], "environment OPENAI_BASE_URL")
        for args in (["config"], ["config", "--json"], ["-vv", "config"],
                     ["--log-json", "-vv", "config"]):
            r = self.ok(*args, cwd=d, env=env)
            self.assertNotIn(secret, r.stdout + r.stderr)

        env = {"THALAMUS_PROVIDER": "anthropic", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
        llm = self.config_json(d, env=env)["values"]["llm"]
        self.assertEqual(llm["api_key_env"], "ANTHROPIC_API_KEY")
        self.assertEqual(llm["base_url"], "http://127.0.0.1:9")

        r = self.thalamus("config", cwd=d, env={"THALAMUS_PROVIDER": "gpt"})
        self.assertEqual(r.returncode, 1)
        self.assertIn('THALAMUS_PROVIDER: llm.provider must be one of', r.stderr)

    def test_invalid_config_names_the_key(self):
        d = self.init_workspace()
        self.write_config(d, 'return { loop = { jobs = "two" } }\n')
        r = self.thalamus("config", cwd=d)
        self.assertEqual(r.returncode, 1)
        self.assertIn('thalamus.lua: loop.jobs must be a positive integer, got "two"', r.stderr)
        self.assertEqual(r.stdout, "")

        self.write_config(d, 'return {\n  loop = { jobs = 2 },\n  task = { metric = }\n}\n')
        r = self.thalamus("config", cwd=d)
        self.assertEqual(r.returncode, 1)
        self.assertIn("thalamus.lua:3:", r.stderr)

        self.write_config(d, 'return { sandbox = { timeot = 5 } }\n')
        r = self.thalamus("config", cwd=d)
        self.assertIn("unknown key 'sandbox.timeot'; did you mean 'sandbox.timeout'?", r.stderr)

        self.write_config(d, 'os.remove("TASK.md")\nreturn {}\n')
        r = self.thalamus("config", cwd=d)
        self.assertEqual(r.returncode, 1)
        self.assertIn("global 'os'", r.stderr)
        self.assertTrue(os.path.exists(os.path.join(d, "TASK.md")))


if __name__ == "__main__":
    unittest.main()

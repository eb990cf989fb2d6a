"""The command line itself: version, help, usage errors and exit statuses."""
import re
import unittest

from harness import Case


class CliTest(Case):
    def test_version(self):
        r = self.ok("--version")
        self.assertRegex(r.stdout, r"^thalamus \d+\.\d+\.\d+\n$")

    def test_help_lists_only_working_commands(self):
        r = self.ok("help")
        listed = re.findall(r"^  (\w+)\s", r.stdout.split("Commands:")[1].split("Global")[0],
                            re.M)
        for command in ("ask", "config", "help", "init", "models", "sandbox", "usage"):
            self.assertIn(command, listed)
        for command in listed:
            h = self.ok(command, "--help")
            self.assertIn(f"usage: thalamus {command}", h.stdout)
            self.assertEqual(self.ok("help", command).stdout, h.stdout)

    def test_no_command_is_usage_error(self):
        r = self.thalamus()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: thalamus", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_unknown_command_suggests(self):
        r = self.thalamus("ini", "x")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'ini'; did you mean 'init'?", r.stderr)
        r = self.thalamus("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        self.assertNotIn("did you mean", r.stderr)

    def test_wrong_flag_suggests(self):
        r = self.thalamus("init", "--templat", "classifier", self.path("w"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown option '--templat'; did you mean '--template'?", r.stderr)
        self.assertIn("usage: thalamus init", r.stderr)
        r = self.thalamus("--bogus", "help")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown option '--bogus'", r.stderr)

    def test_wrong_arguments(self):
        r = self.thalamus("config", "extra")
        self.assertEqual(r.returncode, 2)
        self.assertIn("'config' takes no arguments", r.stderr)
        r = self.thalamus("init")
        self.assertEqual(r.returncode, 2)
        self.assertIn("init needs the directory", r.stderr)
        r = self.thalamus("help", "nope")
        self.assertEqual(r.returncode, 2)

    def test_missing_directory_for_C(self):
        r = self.thalamus("-C", self.path("does-not-exist"), "config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot change to directory", r.stderr)

    def test_log_json_errors(self):
        r = self.thalamus("--log-json", "init", self.path("x"), "--template", "nope")
        self.assertEqual(r.returncode, 2)
        import json
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, "with --log-json, stderr holds only JSON lines")
        first = json.loads(lines[0])
        self.assertEqual(first["level"], "error")
        self.assertIn("no template named 'nope'", first["msg"])
        self.assertRegex(first["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_verbosity(self):
        quiet = self.thalamus("-vv", "help")
        self.assertIn("command 'help'", quiet.stderr)
        self.assertNotIn("command 'help'", self.ok("help").stderr)

    def test_no_colour_when_not_a_terminal(self):
        r = self.ok("help")
        self.assertNotIn("\033[", r.stdout)


if __name__ == "__main__":
    unittest.main()

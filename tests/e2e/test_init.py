"""thalamus init: workspace files, the baseline commit checked with the
system git, refusal to overwrite, reuse of an existing repository, the
templates and the install layout."""
import json
import os
import shutil
import sqlite3
import subprocess
import unittest

from harness import BIN, Case

TEMPLATE_FILES = {"thalamus.lua", "TASK.md", "experiment/train.py", "experiment/params.json"}


class InitTest(Case):
    def tracked(self, repo):
        return set(self.git(repo, "ls-files").split())

    def test_new_workspace(self):
        d = self.path("research")
        r = self.ok("init", d)
        self.assertIn("Created workspace", r.stdout)
        self.assertTrue(TEMPLATE_FILES <= self.tracked(d), self.tracked(d))
        self.assertIn(".gitignore", self.tracked(d))
        with open(os.path.join(d, ".gitignore")) as f:
            self.assertIn(".thalamus/", f.read().splitlines())
        # one commit on main, by the configured author, clean tree and fsck
        self.assertEqual(self.git(d, "symbolic-ref", "HEAD").strip(), "refs/heads/main")
        log = self.git(d, "log", "--format=%an <%ae>|%s").splitlines()
        self.assertEqual(log, ["Ada Tester <ada@example.org>|Baseline from template 'classifier'"])
        self.assertIn("Thalamus-Template: classifier",
                      self.git(d, "log", "-1", "--format=%(trailers)"))
        self.assertEqual(self.git(d, "status", "--porcelain"), "")
        self.git(d, "fsck", "--strict", "--no-dangling")
        commit = self.git(d, "rev-parse", "HEAD").strip()
        self.assertIn(commit[:12], r.stdout)
        # the store exists, is untracked, and knows the baseline
        db = os.path.join(d, ".thalamus", "memory.db")
        self.assertTrue(os.path.exists(db))
        self.assertFalse(any(p.startswith(".thalamus") for p in self.tracked(d)))
        with sqlite3.connect(db) as con:
            info = dict(con.execute("SELECT key, value FROM workspace_info"))
            self.assertEqual(info["baseline_commit"], commit)
            self.assertEqual(info["template"], "classifier")
            self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        # the executable bit survives the copy and the commit
        mode = self.git(d, "ls-files", "-s", "experiment/params.json").split()[0]
        self.assertEqual(mode, "100644")

    def test_author_from_git_config_or_default(self):
        env = {"GIT_AUTHOR_NAME": None, "GIT_AUTHOR_EMAIL": None}
        with open(os.path.join(self.home, ".gitconfig"), "w") as f:
            f.write("[user]\n\tname = Config Person\n\temail = cp@example.org\n")
        d = self.path("a")
        self.ok("init", d, env=env)
        self.assertEqual(self.git(d, "log", "-1", "--format=%an <%ae>").strip(),
                         "Config Person <cp@example.org>")
        os.remove(os.path.join(self.home, ".gitconfig"))
        d = self.path("b")
        r = self.ok("init", d, env=env)
        self.assertIn("no git identity is configured", r.stderr)
        self.assertIn("git config --global user.name", r.stderr)

    def test_non_empty_directory_refused(self):
        d = self.path("busy")
        os.makedirs(d)
        with open(os.path.join(d, "notes.txt"), "w") as f:
            f.write("mine\n")
        r = self.thalamus("init", d)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not empty", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertEqual(os.listdir(d), ["notes.txt"])

        r = self.ok("init", "--force", d)
        with open(os.path.join(d, "notes.txt")) as f:
            self.assertEqual(f.read(), "mine\n")
        self.assertNotIn("notes.txt", self.tracked(d))
        self.assertTrue(TEMPLATE_FILES <= self.tracked(d))

    def test_force_never_overwrites(self):
        d = self.path("clash")
        os.makedirs(d)
        with open(os.path.join(d, "TASK.md"), "w") as f:
            f.write("my own task\n")
        r = self.thalamus("init", "--force", d)
        self.assertEqual(r.returncode, 1)
        self.assertIn("would be overwritten", r.stderr)
        self.assertIn("'TASK.md'", r.stderr)
        with open(os.path.join(d, "TASK.md")) as f:
            self.assertEqual(f.read(), "my own task\n")
        self.assertEqual(sorted(os.listdir(d)), ["TASK.md"])

    def test_existing_repository_gets_one_commit(self):
        d = self.path("repo")
        os.makedirs(d)
        self.git(d, "init", "-q", "-b", "trunk")
        with open(os.path.join(d, "README"), "w") as f:
            f.write("hello\n")
        self.git(d, "add", "README")
        self.git(d, "commit", "-q", "-m", "first")
        first = self.git(d, "rev-parse", "HEAD").strip()
        # a change the user has staged but not committed
        with open(os.path.join(d, "staged.txt"), "w") as f:
            f.write("work in progress\n")
        self.git(d, "add", "staged.txt")

        r = self.ok("init", "--force", d)
        self.assertIn("existing repository", r.stdout)
        self.assertEqual(self.git(d, "rev-parse", "HEAD~1").strip(), first)
        self.assertEqual(self.git(d, "rev-list", "--count", "HEAD").strip(), "2")
        self.assertEqual(self.git(d, "symbolic-ref", "HEAD").strip(), "refs/heads/trunk")
        committed = set(self.git(d, "show", "--name-only", "--format=", "HEAD").split())
        self.assertNotIn("staged.txt", committed)
        self.assertTrue(TEMPLATE_FILES <= committed)
        # the user's staged change is still staged, nothing else is pending
        self.assertEqual(self.git(d, "status", "--porcelain").splitlines(), ["A  staged.txt"])
        self.git(d, "fsck", "--strict", "--no-dangling")

    def test_fresh_git_init_needs_no_force(self):
        d = self.path("fresh")
        os.makedirs(d)
        self.git(d, "init", "-q")
        self.ok("init", d)
        self.assertEqual(self.git(d, "rev-list", "--count", "HEAD").strip(), "1")

    def test_gitignore_extended_not_replaced(self):
        d = self.path("ign")
        os.makedirs(d)
        with open(os.path.join(d, ".gitignore"), "w") as f:
            f.write("*.log")
        self.ok("init", "--force", d)
        with open(os.path.join(d, ".gitignore")) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "*.log")
        self.assertIn(".thalamus/", lines)

    def test_templates(self):
        r = self.ok("init", "--list-templates")
        self.assertRegex(r.stdout, r"classifier\s+\S.*\(default\)")
        data = json.loads(self.ok("init", "--list-templates", "--json").stdout)
        self.assertIn("classifier", [t["name"] for t in data])
        r = self.thalamus("init", self.path("x"), "--template", "nope")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no template named 'nope' (available: classifier", r.stderr)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_path_is_a_file(self):
        p = self.path("file")
        open(p, "w").close()
        r = self.thalamus("init", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not a directory", r.stderr)

    def test_baseline_experiment_honours_the_contract(self):
        d = self.init_workspace()
        cfg = self.config_json(d)["values"]["task"]
        run = self.path("run")
        shutil.copytree(os.path.join(d, "experiment"), run)
        subprocess.run(cfg["command"], cwd=run, check=True, timeout=120, capture_output=True)
        with open(os.path.join(run, "results.json")) as f:
            results = json.load(f)
        metric = results[cfg["metric"]]
        self.assertIsInstance(metric, float)
        self.assertTrue(0.0 <= metric <= 1.0)
        # every searchable parameter exists in the parameter file
        with open(os.path.join(run, cfg["params_file"])) as f:
            params = json.load(f)
        self.assertTrue(set(cfg["search_space"]) <= set(params))

    def test_installed_layout(self):
        """cmake --install puts the binary and its data where it finds them,
        with no reference to the source or build tree."""
        build = os.path.dirname(os.path.dirname(BIN))
        prefix = self.path("prefix")
        subprocess.run(["cmake", "--install", build, "--prefix", prefix], check=True,
                       capture_output=True, timeout=120)
        installed = os.path.join(prefix, "bin", "thalamus")
        self.assertTrue(os.path.exists(os.path.join(prefix, "share", "thalamus", "templates",
                                                    "classifier", "thalamus.lua")))
        r = self.ok("init", self.path("inst"), binary=installed)
        self.assertIn("classifier", r.stdout)
        # a lone copy of the binary says where it looked and how to fix it
        lone = self.path("lone")
        os.makedirs(os.path.join(lone, "bin"))
        shutil.copy(installed, os.path.join(lone, "bin", "thalamus"))
        r = self.thalamus("init", self.path("y"), binary=os.path.join(lone, "bin", "thalamus"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot find thalamus's data directory", r.stderr)
        self.assertIn("THALAMUS_DATA_DIR", r.stderr)
        r = self.ok("init", self.path("z"), binary=os.path.join(lone, "bin", "thalamus"),
                    env={"THALAMUS_DATA_DIR": os.path.join(prefix, "share", "thalamus")})


if __name__ == "__main__":
    unittest.main()

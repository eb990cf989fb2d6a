"""thalamus memory and thalamus doctor: adding, searching (ranked, with the
score's breakdown), showing, linking, forgetting, similarity, episodes,
stats, export and import round trips, embeddings through a local fake
/embeddings server, invalid UTF-8, a reader while another process writes,
and damaged or foreign database files found by doctor with clear
messages."""
import json
import os
import sqlite3
import subprocess
import unittest

from fake_literature import FakeLiterature
from harness import BIN, Case

KEY = "emb-SECRET-31415"


def lua_table(sections):
    """{"memory": {"weight_recency": 0}} as Lua source."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(v)
    parts = []
    for name, keys in sections.items():
        inner = ", ".join(f"{k} = {value(v)}" for k, v in keys.items())
        parts.append(f"{name} = {{ {inner} }}")
    return "return { " + ", ".join(parts) + " }\n"


class MemoryCase(Case):
    def workspace(self, name="ws", **sections):
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "thalamus.lua"), "w") as f:
            f.write(lua_table(sections))
        return d

    def mem(self, ws, *args, **kw):
        return self.ok("memory", *args, cwd=ws, **kw)

    def fails(self, ws, *args, status=1, **kw):
        r = self.thalamus(*args, cwd=ws, **kw)
        self.assertEqual(r.returncode, status, f"stdout: {r.stdout}\nstderr: {r.stderr}")
        self.assertNotIn("runtime error", r.stderr)
        self.assertNotIn("AddressSanitizer", r.stderr)
        return r

    def add(self, ws, text, *extra):
        out = self.mem(ws, "add", text, *extra, "--json").stdout
        return json.loads(out)["id"]

    def search(self, ws, *args):
        return json.loads(self.mem(ws, "search", *args, "--json").stdout)

    def db(self, ws):
        return os.path.join(ws, ".thalamus", "memory.db")


class Items(MemoryCase):
    def test_add_search_show_forget(self):
        ws = self.workspace()
        drop = self.add(ws, "Dropout layers reduce overfitting of small networks",
                        "--kind", "insight", "--importance", "0.9", "--title", "Dropout helps")
        self.add(ws, "Batch normalization speeds up training", "--kind", "note")
        self.add(ws, "Learning rate warmup stabilises early training", "--kind", "idea")
        r = self.mem(ws, "search", "overfitting", "networks")
        lines = r.stdout.splitlines()
        self.assertIn("score = relevance x 1 + recency x 0.5", lines[0])
        self.assertRegex(lines[1], r"#\s+score\s+relevance\s+recency\s+importance\s+activation"
                                   r"\s+id\s+kind\s+title")
        self.assertRegex(lines[2], r"^\s+1\s+1\.\d{3}\s+1\.000\s+0\.500\s+0\.450\s+0\.000\s+"
                                   rf"{drop}\s+insight\s+Dropout helps$")

        hits = self.search(ws, "training")
        self.assertEqual(len(hits), 2)
        for h in hits:
            b = h["breakdown"]
            self.assertAlmostEqual(h["score"], b["relevance_part"] + b["recency_part"] +
                                   b["importance_part"] + b["activation_part"], places=9)
            self.assertLess(b["bm25"], 0)
            self.assertIsNone(b["cosine"])
        self.assertEqual([h["rank"] for h in hits], [1, 2])

        # --kind and --k
        self.assertEqual([h["kind"] for h in self.search(ws, "training", "--kind", "note")],
                         ["note"])
        self.assertEqual(len(self.search(ws, "training", "--k", "1")), 1)

        shown = json.loads(self.mem(ws, "show", str(drop), "--json").stdout)
        self.assertEqual(shown["title"], "Dropout helps")
        self.assertEqual(shown["access_count"], 1)  # the first search recalled it
        text = self.mem(ws, "show", f"#{drop}").stdout
        self.assertIn("Dropout layers reduce overfitting", text)
        self.assertIn("Links (0)", text)

        self.assertIn(f"forgot #{drop}", self.mem(ws, "forget", str(drop)).stdout)
        self.assertEqual(self.search(ws, "overfitting"), [])
        r = self.fails(ws, "memory", "show", str(drop))
        self.assertIn(f"no memory item {drop}", r.stderr)

    def test_no_touch_leaves_access_statistics(self):
        ws = self.workspace()
        i = self.add(ws, "gradient clipping")
        self.search(ws, "gradient", "--no-touch")
        shown = json.loads(self.mem(ws, "show", str(i), "--json").stdout)
        self.assertEqual(shown["access_count"], 0)
        self.search(ws, "gradient")
        shown = json.loads(self.mem(ws, "show", str(i), "--json").stdout)
        self.assertEqual(shown["access_count"], 1)

    def test_links_carry_activation(self):
        ws = self.workspace()
        a = self.add(ws, "transformer attention", "--kind", "concept")
        b = self.add(ws, "sinusoidal positional encoding", "--kind", "idea")
        self.assertIn(f"linked #{a} derived_from #{b}",
                      self.mem(ws, "link", str(a), str(b), "--type", "derived_from").stdout)
        hits = self.search(ws, "attention")
        self.assertEqual([h["id"] for h in hits], [a, b])
        self.assertEqual(hits[1]["via"], {"id": a, "type": "derived_from", "hops": 1})
        self.assertAlmostEqual(hits[1]["breakdown"]["activation"], 0.5)
        self.assertIn(f"(via #{a} derived_from)", self.mem(ws, "search", "attention").stdout)
        text = self.mem(ws, "show", str(b)).stdout
        self.assertRegex(text, rf"<--\s+#{a}\s+derived_from\s+1\.000\s+transformer attention")
        # with activation off in the configuration, b is not recalled
        ws2 = self.workspace("ws2", memory={"activation_hops": 0})
        a2 = self.add(ws2, "transformer attention")
        b2 = self.add(ws2, "sinusoidal positional encoding")
        self.mem(ws2, "link", str(a2), str(b2))
        self.assertEqual([h["id"] for h in self.search(ws2, "attention")], [a2])

    def test_weights_from_the_configuration(self):
        ws = self.workspace(memory={"weight_importance": 2, "weight_recency": 0})
        low = self.add(ws, "early stopping on validation loss", "--importance", "0.1")
        high = self.add(ws, "early stopping on validation loss", "--importance", "0.9")
        hits = self.search(ws, "early stopping")
        self.assertEqual([h["id"] for h in hits], [high, low])
        self.assertAlmostEqual(hits[0]["breakdown"]["importance_part"], 1.8)
        self.assertEqual(hits[0]["breakdown"]["recency_part"], 0)

    def test_similar(self):
        ws = self.workspace()
        idea = self.add(ws, "Add dropout to reduce overfitting of the spiral classifier",
                        "--kind", "idea")
        self.add(ws, "Use a larger batch size for speed", "--kind", "idea")
        out = json.loads(self.mem(ws, "similar", "reduce overfitting with dropout",
                                  "--kind", "idea", "--threshold", "0.3", "--json").stdout)
        self.assertEqual([m["id"] for m in out], [idea])
        self.assertGreaterEqual(out[0]["similarity"], 0.3)
        self.assertIn("nothing at or above similarity 0.99 (tf-idf cosine)",
                      self.mem(ws, "similar", "reduce overfitting", "--threshold",
                               "0.99").stdout)

    def test_usage_errors(self):
        ws = self.workspace()
        r = self.fails(ws, "memory", "serch", "x", status=2)
        self.assertIn("unknown memory command 'serch'; did you mean 'search'?", r.stderr)
        r = self.fails(ws, "memory", "add", "x", "--k", "3", status=2)
        self.assertIn("option '--k' does not apply to 'memory add'", r.stderr)
        r = self.fails(ws, "memory", "add", "x", "--kind", "notes", status=2)
        self.assertIn("unknown item kind 'notes'; did you mean 'note'?", r.stderr)
        r = self.fails(ws, "memory", "add", "x", "--importance", "2", status=2)
        self.assertIn("option '--importance' needs a number from 0 to 1", r.stderr)
        r = self.fails(ws, "memory", "show", "abc", status=2)
        self.assertIn("'abc' is not an item id", r.stderr)
        r = self.fails(ws, "memory", "link", "1", status=2)
        self.assertIn("usage: thalamus memory link", r.stderr)
        r = self.fails(self.tmp, "memory", "stats")
        self.assertIn("thalamus.lua", r.stderr)

    def test_config_keys_are_checked(self):
        ws = self.workspace(memory={"activation_hops": 3})
        r = self.fails(ws, "memory", "stats")
        self.assertIn("memory.activation_hops must be an integer from 0 to 2, got 3", r.stderr)
        ws = self.workspace("w2", memory={"recency_decay": 1.5})
        r = self.fails(ws, "config")
        self.assertIn("memory.recency_decay must be a number from 0 to 1", r.stderr)
        ws = self.workspace("w3", literature={"arxiv_delay": 5, "mailto": "a@b.org"})
        cfg = self.config_json(ws)
        self.assertEqual(cfg["values"]["literature"]["arxiv_delay"], 5)
        self.assertEqual(cfg["sources"]["literature.mailto"], "thalamus.lua")
        self.assertEqual(cfg["values"]["memory"]["weight_relevance"], 1)


class Text(MemoryCase):
    def test_invalid_utf8_from_stdin_is_repaired(self):
        ws = self.workspace()
        p = subprocess.run([BIN, "memory", "add", "-", "--json"], cwd=ws, env=self.env,
                           input=b"momentum \xff\xfe schedules \x00 and \xed\xa0\x80 more",
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"not valid UTF-8", p.stderr)
        item = json.loads(p.stdout)
        self.assertEqual(item["text"], "momentum \ufffd\ufffd schedules \ufffd and "
                                       "\ufffd\ufffd\ufffd more")
        self.assertEqual([h["id"] for h in self.search(ws, "schedules")], [item["id"]])
        self.search(ws, "\udcff")  # the byte 0xff on the command line: no crash

    def test_absurd_sizes_are_refused(self):
        ws = self.workspace()
        big = "word " * (9 * 1024 * 1024 // 5)
        r = self.fails(ws, "memory", "add", "-", stdin=big, status=2)
        self.assertIn("larger than the limit of 8388608 bytes", r.stderr)
        ok = "word " * (1024 * 1024 // 5)
        self.ok("memory", "add", "-", cwd=ws, stdin=ok)

    def test_nasty_queries(self):
        ws = self.workspace()
        self.add(ws, "plain text about things")
        for q in ['"unbalanced', "NEAR(a b", "a AND OR NOT", "title:x", "*", "-x", "()",
                  "'; DROP TABLE memory_items; --"]:
            self.mem(ws, "search", "--", q)
        self.assertEqual(len(self.search(ws, "plain")), 1)


class Episodes(MemoryCase):
    def test_import_and_query_episodes(self):
        ws = self.workspace()
        lines = [{"type": "episode", "uid": f"ep{i:010d}", "time_ms": 1700000000000 + i * 3600000,
                  "run": "r1" if i < 3 else "r2", "node": f"n{i}", "agent": "critic",
                  "kind": "result" if i % 2 else "idea", "text": f"episode {i}",
                  "payload": {"accuracy": 0.5 + i / 10}, "importance": 0.5} for i in range(5)]
        path = self.path("eps.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(json.dumps(l) for l in lines) + "\n")
        self.mem(ws, "import", path)
        eps = json.loads(self.mem(ws, "episodes", "--run", "r1", "--json").stdout)
        self.assertEqual([e["text"] for e in eps], ["episode 0", "episode 1", "episode 2"])
        self.assertEqual(eps[1]["payload"], {"accuracy": 0.6})
        eps = json.loads(self.mem(ws, "episodes", "--kind", "result", "--json").stdout)
        self.assertEqual([e["node"] for e in eps], ["n1", "n3"])
        eps = json.loads(self.mem(ws, "episodes", "--since", "2023-11-14T23:00:00Z", "--until",
                                  "2023-11-15T01:00:00Z", "--json").stdout)
        self.assertEqual([e["text"] for e in eps], ["episode 1", "episode 2"])
        # a limit keeps the newest, listed oldest first, and says so
        r = self.mem(ws, "episodes", "--limit", "2")
        self.assertEqual(len(r.stdout.splitlines()), 2)
        self.assertIn("2023-11-15 01:13:20 UTC", r.stdout.splitlines()[0])
        self.assertIn("r2/n3 critic", r.stdout.splitlines()[0])
        self.assertIn("r2/n4 critic", r.stdout.splitlines()[1])
        self.assertIn("the newest 2 episodes; --limit N shows more", r.stderr)
        r = self.mem(ws, "episodes", "--run", "r1")
        self.assertIn("r1/n0 critic", r.stdout)
        self.assertNotIn("newest", r.stderr)
        # the history cannot be rewritten, even with sqlite3
        con = sqlite3.connect(self.db(ws))
        with self.assertRaises(sqlite3.DatabaseError) as cm:
            con.execute("UPDATE memory_episodes SET text = 'forged'")
        self.assertIn("append-only", str(cm.exception))
        con.close()


class ExportImport(MemoryCase):
    def export(self, ws, *extra):
        lines = self.mem(ws, "export", *extra).stdout.splitlines()
        head = json.loads(lines[0])
        self.assertEqual(head["type"], "thalamus-memory")
        return lines[1:]

    def test_round_trip(self):
        a = self.workspace("a")
        x = self.add(a, "first item \u00e9\u4e2d", "--kind", "paper", "--title", "T1")
        y = self.add(a, "second item", "--kind", "idea")
        self.mem(a, "link", str(x), str(y), "--type", "supports", "--weight", "0.7")
        self.search(a, "item")
        first = self.export(a)
        self.assertEqual(len(first), 3)  # two items, one link
        out = self.path("backup.jsonl")
        self.mem(a, "export", "--output", out)

        b = self.workspace("b")
        r = self.mem(b, "import", out)
        self.assertIn("imported 2 items (0 already there), 1 links", r.stdout)
        self.assertEqual(self.export(b), first)
        r = self.mem(b, "import", out)
        self.assertIn("imported 0 items (2 already there)", r.stdout)
        self.assertEqual(self.export(b), first)
        stats = json.loads(self.mem(b, "stats", "--json").stdout)
        self.assertEqual(stats["items"]["total"], 2)
        self.assertEqual(stats["links"]["by_type"], {"supports": 1})

    def test_malformed_lines_are_skipped(self):
        ws = self.workspace()
        path = self.path("mixed.jsonl")
        with open(path, "w") as f:
            f.write('{"type":"item","uid":"aaaaaaaaaaaa","kind":"note","text":"kept"}\n'
                    "{not json\n"
                    '{"type":"item","uid":"bbbbbbbbbbbb","kind":"bogus","text":"x"}\n')
        r = self.fails(ws, "memory", "import", path, status=3)
        self.assertIn("mixed.jsonl:2: not valid JSON; line skipped", r.stderr)
        self.assertIn("mixed.jsonl:3: unknown item kind 'bogus'", r.stderr)
        self.assertIn("imported 1 items", r.stdout)
        self.assertEqual(len(self.search(ws, "kept")), 1)


class Reliability(MemoryCase):
    def test_reader_while_another_process_writes(self):
        ws = self.workspace()
        self.add(ws, "committed before the writer started")
        con = sqlite3.connect(self.db(ws), isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO memory_items(uid, kind, text, created_ms, accessed_ms) VALUES "
                    "('uncommitted-1', 'note', 'written inside an open transaction', 1, 1)")
        try:
            hits = self.search(ws, "committed", "writer", "--no-touch")
            self.assertEqual(len(hits), 1)
            self.assertEqual(self.search(ws, "inside an open transaction", "--no-touch"), [])
            stats = json.loads(self.mem(ws, "stats", "--json").stdout)
            self.assertEqual(stats["items"]["total"], 1)
        finally:
            con.execute("COMMIT")
            con.close()
        self.assertEqual(len(self.search(ws, "open transaction")), 1)

    def test_doctor_healthy(self):
        ws = self.workspace()
        r = self.ok("doctor", cwd=ws)
        self.assertIn("no database yet", r.stdout)
        self.add(ws, "something")
        r = self.ok("doctor", cwd=ws)
        for check in ("file", "identity", "integrity_check", "foreign_keys", "fulltext",
                      "append_only", "journal", "schema"):
            self.assertRegex(r.stdout, rf"ok\s+{check}\s")
        self.assertIn("all checks passed", r.stdout)
        report = json.loads(self.ok("doctor", "--json", "--quick", cwd=ws).stdout)
        self.assertTrue(report["ok"])
        self.assertEqual(report["schema_versions"]["memory"], {"applied": 5, "known": 5})

    def test_doctor_finds_damage(self):
        ws = self.workspace()
        self.add(ws, "an item added by hand")
        path = self.path("items.jsonl")
        with open(path, "w") as f:
            for i in range(400):
                f.write(json.dumps({"type": "item", "uid": f"u{i:011d}", "kind": "note",
                                    "text": f"filler item {i} " + "lorem ipsum " * 20}) + "\n")
        self.mem(ws, "import", path)
        size = os.path.getsize(self.db(ws))
        self.assertGreater(size, 40 * 4096)
        with open(self.db(ws), "r+b") as f:
            f.seek(4096 * 10)
            f.write(bytes((i * 37 + 11) % 256 for i in range(4096 * 4)))
        r = self.fails(ws, "doctor", status=1)
        self.assertRegex(r.stdout, r"FAIL\s+integrity_check")
        self.assertIn("problem", r.stdout)
        # commands say what is wrong instead of crashing
        r = self.thalamus("memory", "search", "filler", "--no-touch", cwd=ws)
        self.assertIn(r.returncode, (0, 1))
        if r.returncode:
            self.assertIn("malformed", r.stderr)
        self.assertNotIn("AddressSanitizer", r.stderr)

    def test_foreign_and_garbage_files(self):
        ws = self.workspace()
        os.makedirs(os.path.join(ws, ".thalamus"))
        with open(self.db(ws), "wb") as f:
            f.write(b"this is not a database at all\n" * 200)
        r = self.fails(ws, "memory", "stats")
        self.assertIn("is not a thalamus database", r.stderr)
        r = self.fails(ws, "doctor", status=1)
        self.assertRegex(r.stdout, r"FAIL\s+file\s+the file does not start with the SQLite header")
        os.unlink(self.db(ws))
        con = sqlite3.connect(self.db(ws))
        con.execute("CREATE TABLE other (x)")
        con.commit()
        con.close()
        r = self.fails(ws, "memory", "stats")
        self.assertIn("is a SQLite database of another program", r.stderr)
        r = self.fails(ws, "doctor", status=1)
        self.assertRegex(r.stdout, r"FAIL\s+identity\s+no thalamus application id")


class Embeddings(MemoryCase):
    def setUp(self):
        super().setUp()
        self.fake = FakeLiterature()
        self.addCleanup(self.fake.close)

    def embedding_workspace(self, url=None):
        return self.workspace(memory={"embedding_model": "toy-embed",
                                      "embedding_base_url": url or self.fake.url + "/v1",
                                      "embedding_api_key_env": "TOY_KEY"},
                              llm={"max_retries": 1})

    def test_vectors_are_stored_and_fused(self):
        ws = self.embedding_workspace()
        env = {"TOY_KEY": KEY}
        car = json.loads(self.ok("memory", "add", "the automobile needs new tyres", "--json",
                                 cwd=ws, env=env).stdout)["id"]
        self.ok("memory", "add", "bananas are rich in potassium", cwd=ws, env=env)
        reqs = self.fake.seen("/v1/embeddings")
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[0]["headers"]["authorization"], f"Bearer {KEY}")
        self.assertEqual(reqs[0]["json"]["model"], "toy-embed")
        self.assertEqual(reqs[0]["json"]["input"], ["the automobile needs new tyres"])

        # "car" shares no word with the item, only its vector
        r = self.ok("memory", "search", "car", "--json", cwd=ws, env=env)
        hits = json.loads(r.stdout)
        self.assertEqual(hits[0]["id"], car)
        self.assertEqual(hits[0]["breakdown"]["keyword_rank"], 0)
        self.assertEqual(hits[0]["breakdown"]["vector_rank"], 1)
        self.assertGreater(hits[0]["breakdown"]["cosine"], 0.3)
        self.assertEqual(self.fake.seen("/v1/embeddings")[-1]["json"]["input"], ["car"])
        stats = json.loads(self.ok("memory", "stats", "--json", cwd=ws, env=env).stdout)
        self.assertEqual(stats["embeddings"], {"toy-embed": 2})
        for out in (r.stdout, r.stderr):
            self.assertNotIn(KEY, out)

    def test_similar_uses_embeddings(self):
        ws = self.embedding_workspace()
        env = {"TOY_KEY": KEY}
        car = json.loads(self.ok("memory", "add", "buy an automobile", "--kind", "idea", "--json",
                                 cwd=ws, env=env).stdout)["id"]
        self.ok("memory", "add", "plant some tomatoes", "--kind", "idea", cwd=ws, env=env)
        out = json.loads(self.ok("memory", "similar", "car", "--kind", "idea", "--threshold",
                                 "0.3", "--json", cwd=ws, env=env).stdout)
        self.assertEqual([m["id"] for m in out], [car])
        self.assertEqual(out[0]["measure"], "embedding cosine")
        self.assertAlmostEqual(out[0]["similarity"], 1 / 3 ** 0.5, places=5)

    def test_endpoint_down_falls_back_to_keywords(self):
        ws = self.embedding_workspace(url="http://127.0.0.1:1/v1")
        r = self.ok("memory", "add", "gradient noise", cwd=ws)
        self.assertIn("going on without embeddings", r.stderr)
        hits = self.search(ws, "gradient")
        self.assertEqual(len(hits), 1)
        self.assertIsNone(hits[0]["breakdown"]["cosine"])

    def test_retry_and_backfill(self):
        plain = self.workspace()
        self.add(plain, "first")
        self.add(plain, "second")
        ws = self.embedding_workspace()
        os.rename(os.path.join(plain, ".thalamus"), os.path.join(ws, ".thalamus"))
        self.fake.failures = [503]
        r = self.ok("memory", "embed", cwd=ws, env={"TOY_KEY": KEY})
        self.assertIn("embedded 2 items with toy-embed", r.stdout)
        self.assertIn("retrying", r.stderr)
        self.assertEqual(len(self.fake.seen("/v1/embeddings")), 2)
        r = self.ok("memory", "embed", cwd=ws, env={"TOY_KEY": KEY})
        self.assertIn("embedded 0 items", r.stdout)
        r = self.fails(self.workspace("off"), "memory", "embed", status=1)
        self.assertIn("no embedding model is configured", r.stderr)


if __name__ == "__main__":
    unittest.main()

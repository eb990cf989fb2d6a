"""thalamus ingest: files in every format (malformed records reported with
their line or entry and skipped, exit status 3), duplicates merged across
formats, and --openalex / --arxiv against local fake servers
(fake_literature.py): the requests they received (query parameters,
paging, User-Agent, contact address), the configured delay between
requests (measured on the server, from the end of one reply to the arrival
of the next request: a lower bound that cannot flake), retries, the reply
cache, and citation links."""
import json
import os
import unittest

from fake_literature import FakeLiterature
from test_memory import MemoryCase

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                        "literature")


def fixture(name):
    return os.path.join(FIXTURES, name)


class Files(MemoryCase):
    def test_every_format_with_malformed_records(self):
        ws = self.workspace()
        r = self.fails(ws, "ingest", fixture("papers.jsonl"), fixture("refs.bib"),
                       fixture("arxiv.xml"), fixture("openalex.json"), status=3)
        out = r.stdout.splitlines()
        self.assertEqual(len(out), 4)
        self.assertRegex(out[0], r"papers\.jsonl: 4 added, 1 merged, 4 skipped \(malformed\), "
                                 r"2 citation links")
        self.assertRegex(out[1], r"refs\.bib: 2 added, 1 merged, 3 skipped")
        self.assertRegex(out[2], r"arxiv\.xml: 2 added, 1 merged, 2 skipped")
        self.assertRegex(out[3], r"openalex\.json: 0 added, 2 merged, 1 skipped \(malformed\), "
                                 r"1 citation link$")
        for where in ("papers.jsonl: line 4: not valid JSON; skipped",
                      "papers.jsonl: line 5: no title; skipped",
                      "refs.bib: entry 'broken2019' (line 27): unbalanced braces",
                      "refs.bib: entry 'notitle2021' (line 32): no title",
                      "arxiv.xml: entry 4 (line 35): malformed XML: line 37",
                      "openalex.json: result 3 (W3000000003): no title"):
            self.assertIn(where, r.stderr)

        hits = self.search(ws, "attention", "--kind", "paper")
        self.assertEqual(hits[0]["title"], "Attention Is All You Need")
        self.assertEqual(len([h for h in hits if h["title"].startswith("Attention")]), 1)
        meta = hits[0]["metadata"]
        self.assertEqual(meta["year"], 2017)
        self.assertEqual(meta["arxiv_id"], "1706.03762")
        self.assertEqual(meta["openalex_id"], "W2963403868")
        shown = json.loads(self.mem(ws, "show", str(hits[0]["id"]), "--json").stdout)
        self.assertEqual(sorted(k.split(":")[0] for k in shown["keys"]),
                         ["arxiv", "doi", "openalex", "title"])
        self.assertIn("cites", [l["type"] for l in shown["links"]])
        # accents from BibTeX are searchable without them
        self.assertEqual(self.search(ws, "Muller etude")[0]["title"],
                         "M\u00fcller's \u00c9tude on na\u00efve Bayes \u2013 revisited")
        # each file was a bulk load (records merged into items added by the
        # same load included): the full-text index matches the items
        r = self.ok("doctor", cwd=ws)
        self.assertRegex(r.stdout, r"ok\s+fulltext\s")
        self.assertIn("all checks passed", r.stdout)

    def test_clean_file_exits_0_and_reingest_merges(self):
        ws = self.workspace()
        path = self.path("good.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"title": "A clean paper title", "doi": "10.1/clean"}) + "\n")
        r = self.ok("ingest", path, cwd=ws)
        self.assertIn("1 added, 0 merged, 0 skipped", r.stdout)
        r = self.ok("ingest", path, "--json", cwd=ws)
        self.assertEqual(json.loads(r.stdout)[0]["merged"], 1)

    def test_errors(self):
        ws = self.workspace()
        r = self.fails(ws, "ingest", status=2)
        self.assertIn("ingest needs a FILE, --openalex QUERY or --arxiv QUERY", r.stderr)
        r = self.fails(ws, "ingest", "--format", "csv", fixture("refs.bib"), status=2)
        self.assertIn("unknown format 'csv'", r.stderr)
        r = self.fails(ws, "ingest", self.path("missing.bib"))
        self.assertIn("cannot open", r.stderr)
        broken = self.path("broken.xml")
        with open(broken, "w") as f:
            f.write("<feed><entry><title>Fine</title><id>http://arxiv.org/abs/2101.00001</id>"
                    "</entry></feed><junk")
        r = self.fails(ws, "ingest", broken)
        self.assertIn("not a valid Atom feed", r.stderr)
        # what was read before the damage is kept
        self.assertEqual(len(self.search(ws, "Fine")), 1)


class Online(MemoryCase):
    def setUp(self):
        super().setUp()
        self.fake = FakeLiterature()
        self.addCleanup(self.fake.close)

    def online_workspace(self, **literature):
        keys = {"openalex_url": self.fake.url + "/openalex",
                "arxiv_url": self.fake.url + "/arxiv/query",
                "openalex_delay": 0.2, "arxiv_delay": 0.3, "max_retries": 2,
                "mailto": "ada@example.org"}
        keys.update(literature)
        return self.workspace(literature=keys)

    def assert_spaced(self, reqs, delay):
        """Each request arrived at least delay after the previous reply ended.

        The server notes "ended" after its last write returns; on a loaded
        machine its thread may run again only tens of milliseconds after the
        client has read the reply, hence the tolerance (a client that did
        not wait would send the next request within a few milliseconds)."""
        for prev, nxt in zip(reqs, reqs[1:]):
            gap = nxt["arrived"] - prev["ended"]
            self.assertGreaterEqual(gap, delay - 0.03, f"requests only {gap:.3f} s apart")

    def test_openalex_paging_politeness_and_cache(self):
        ws = self.online_workspace()
        r = self.ok("ingest", "--openalex", "graph neural networks", "--limit", "5", cwd=ws)
        self.assertIn("openalex: 5 added, 0 merged, 0 skipped (malformed), 4 citation links",
                      r.stdout)
        reqs = self.fake.seen("/openalex/works")
        self.assertEqual(len(reqs), 3)  # the server sends at most 2 per page
        self.assertEqual([q["query"]["cursor"] for q in reqs], ["*", "c2", "c4"])
        self.assertEqual([q["query"]["per_page"] for q in reqs], ["5", "3", "1"])
        for q in reqs:
            self.assertEqual(q["query"]["search"], "graph neural networks")
            self.assertEqual(q["query"]["mailto"], "ada@example.org")
            self.assertIn("abstract_inverted_index", q["query"]["select"])
            self.assertRegex(q["headers"]["user-agent"],
                             r"^thalamus/\S+ \(mailto:ada@example\.org\)$")
        self.assert_spaced(reqs, 0.2)
        hits = self.search(ws, "message passing")
        self.assertEqual(len(hits), 5)

        # the same search again comes from the cache
        r = self.ok("ingest", "--openalex", "graph neural networks", "--limit", "5", cwd=ws)
        self.assertIn("0 added, 5 merged", r.stdout)
        self.assertIn("3 from the cache", r.stderr)
        self.assertEqual(len(self.fake.seen("/openalex/works")), 3)
        self.ok("ingest", "--openalex", "graph neural networks", "--limit", "5", "--refresh",
                cwd=ws)
        self.assertEqual(len(self.fake.seen("/openalex/works")), 6)
        cache = os.path.join(ws, ".thalamus", "cache", "literature")
        self.assertEqual(len(os.listdir(cache)), 3)

    def test_arxiv_query_paging_and_delay(self):
        ws = self.online_workspace()
        r = self.ok("ingest", "--arxiv", "transformer attention", "--limit", "3", cwd=ws)
        self.assertIn("arxiv: 3 added", r.stdout)
        reqs = self.fake.seen("/arxiv/query")
        self.assertEqual([q["query"]["search_query"] for q in reqs],
                         ["all:transformer AND all:attention"] * 2)
        self.assertEqual([(q["query"]["start"], q["query"]["max_results"]) for q in reqs],
                         [("0", "3"), ("2", "1")])
        self.assertEqual(reqs[0]["headers"]["accept"], "application/atom+xml")
        self.assert_spaced(reqs, 0.3)
        hits = self.search(ws, "transformer", "--kind", "paper")
        self.assertEqual(len(hits), 3)
        self.assertEqual(hits[0]["metadata"]["arxiv_id"][:5], "2301.")

        # the user's own arXiv syntax goes through untouched; paging stops
        # at totalResults
        self.ok("ingest", "--arxiv", "ti:attention AND cat:cs.CL", "--limit", "50", cwd=ws)
        reqs = self.fake.seen("/arxiv/query")[2:]
        self.assertEqual(reqs[0]["query"]["search_query"], "ti:attention AND cat:cs.CL")
        self.assertEqual([q["query"]["start"] for q in reqs], ["0", "2", "4"])

    def test_retries(self):
        ws = self.online_workspace()
        self.fake.failures = [503, 429]
        r = self.ok("ingest", "--openalex", "graphs", "--limit", "2", cwd=ws)
        self.assertIn("openalex: 2 added", r.stdout)
        self.assertIn("HTTP 503; retrying", r.stderr)
        self.assertIn("HTTP 429; retrying", r.stderr)
        self.assertEqual(len(self.fake.seen("/openalex/works")), 3)

        self.fake.failures = [500, 500, 500]
        r = self.fails(ws, "ingest", "--openalex", "other", "--refresh")
        self.assertIn("OpenAlex: HTTP 500 after retries", r.stderr)

        self.fake.failures = [404]
        r = self.fails(ws, "ingest", "--arxiv", "x", "--refresh")
        self.assertIn("arXiv: HTTP 404", r.stderr)
        self.assertIn("(not retried)", r.stderr)

    def test_unreachable_server(self):
        ws = self.online_workspace(openalex_url="http://127.0.0.1:1/openalex", max_retries=0)
        r = self.fails(ws, "ingest", "--openalex", "graphs")
        self.assertIn("OpenAlex:", r.stderr)
        r = self.fails(self.online_workspace(openalex_url="ftp://example.org"),
                       "ingest", "--openalex", "graphs")
        self.assertIn("must start with http:// or https://", r.stderr)


if __name__ == "__main__":
    unittest.main()

"""Local fakes of the services the memory talks to, for the end-to-end tests
of `thalamus ingest` and of embeddings: the OpenAlex works API, the arXiv
query API, and an OpenAI-compatible /embeddings endpoint.

One threaded HTTP/1.1 server on 127.0.0.1 (an ephemeral port) serves
  GET  /openalex/works   cursor paging over a synthetic corpus of works;
                         at most `openalex_page_cap` results per page, like
                         a server that sends fewer than asked for
  GET  /arxiv/query      Atom feeds with opensearch:totalResults, paged by
                         start and max_results (at most `arxiv_page_cap`)
  POST /v1/embeddings    deterministic vectors: a word-hash bag of words in
                         16 dimensions, where "car" and "automobile" share a
                         dimension (a stand-in for semantics)
Every request is recorded with its path, parsed query, headers (lower-case
names), body, and two server-side monotonic times: when it arrived and when
its reply had been written. `failures` is a FIFO of statuses to answer
instead of the next requests (503 and 429 come with Retry-After: 0).
"""
import hashlib
import http.server
import json
import socketserver
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

DIM = 16
SYNONYMS = {"automobile": "car", "automobiles": "car", "cars": "car"}


def embed(text):
    """A unit vector for text: words hashed into DIM buckets."""
    v = [0.0] * DIM
    for raw in text.lower().split():
        word = "".join(ch for ch in raw if ch.isalnum())
        if not word:
            continue
        word = SYNONYMS.get(word, word)
        h = int(hashlib.sha256(word.encode()).hexdigest(), 16)
        v[h % DIM] += 1.0
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


def openalex_work(i):
    """Synthetic work number i (1-based); each cites its predecessor."""
    refs = [f"https://openalex.org/W{1000 + i - 1}"] if i > 1 else []
    words = f"Graph neural networks study number {i} about message passing".split()
    return {
        "id": f"https://openalex.org/W{1000 + i}",
        "doi": f"https://doi.org/10.9999/gnn.{i}",
        "title": f"Graph neural networks, study {i}",
        "publication_year": 2015 + i,
        "authorships": [{"author": {"display_name": f"Author {i}"}}],
        "abstract_inverted_index": {w: [k] for k, w in enumerate(words)},
        "primary_location": {"landing_page_url": f"https://example.org/{i}",
                             "source": {"display_name": "Journal of Graphs"}},
        "referenced_works": refs,
    }


def arxiv_entry(i):
    return f"""  <entry>
    <id>http://arxiv.org/abs/2301.{i:05d}v1</id>
    <published>2023-01-{i:02d}T00:00:00Z</published>
    <title>Transformer attention paper {i}</title>
    <summary>Attention &amp; transformers, part {i}.</summary>
    <author><name>Researcher {i}</name></author>
  </entry>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-literature/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _record(self, body):
        url = urllib.parse.urlsplit(self.path)
        rec = {
            "method": self.command,
            "path": url.path,
            "query": dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "arrived": time.monotonic(),
            "ended": None,
        }
        with self.server.fake.lock:
            self.server.fake.requests.append(rec)
        return rec

    def _send(self, rec, status, body, ctype, headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        rec["ended"] = time.monotonic()

    def _failure(self, rec):
        fake = self.server.fake
        with fake.lock:
            status = fake.failures.pop(0) if fake.failures else None
        if status is None:
            return False
        headers = {"Retry-After": "0"} if status in (429, 503) else {}
        self._send(rec, status, json.dumps({"error": f"injected {status}"}),
                   "application/json", headers)
        return True

    def do_GET(self):
        rec = self._record(None)
        if self._failure(rec):
            return
        fake = self.server.fake
        q = rec["query"]
        if rec["path"] == "/openalex/works":
            cursor = q.get("cursor", "*")
            start = 0 if cursor == "*" else int(cursor[1:])
            want = min(int(q.get("per_page", "25")), fake.openalex_page_cap)
            end = min(start + want, fake.openalex_total)
            results = [openalex_work(i + 1) for i in range(start, end)]
            nxt = f"c{end}" if end < fake.openalex_total else None
            body = {"meta": {"count": fake.openalex_total, "next_cursor": nxt},
                    "results": results}
            self._send(rec, 200, json.dumps(body), "application/json")
        elif rec["path"] == "/arxiv/query":
            start = int(q.get("start", "0"))
            want = min(int(q.get("max_results", "10")), fake.arxiv_page_cap)
            end = min(start + want, fake.arxiv_total)
            entries = "".join(arxiv_entry(i + 1) for i in range(start, end))
            feed = f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
  <title>ArXiv Query: {escape(q.get("search_query", ""))}</title>
  <opensearch:totalResults>{fake.arxiv_total}</opensearch:totalResults>
  <opensearch:startIndex>{start}</opensearch:startIndex>
{entries}</feed>
"""
            self._send(rec, 200, feed, "application/atom+xml")
        else:
            self._send(rec, 404, "not found", "text/plain")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length).decode("utf-8", "replace")
        rec = self._record(raw)
        try:
            rec["json"] = json.loads(raw)
        except ValueError:
            rec["json"] = None
        if self._failure(rec):
            return
        if rec["path"] != "/v1/embeddings" or not rec["json"]:
            self._send(rec, 404, "not found", "text/plain")
            return
        inputs = rec["json"].get("input", [])
        data = [{"object": "embedding", "index": i, "embedding": embed(t)}
                for i, t in enumerate(inputs)]
        body = {"object": "list", "data": data, "model": rec["json"].get("model"),
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        self._send(rec, 200, json.dumps(body), "application/json")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeLiterature:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.failures = []
        self.openalex_total = 5
        self.openalex_page_cap = 2
        self.arxiv_total = 5
        self.arxiv_page_cap = 2
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def seen(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

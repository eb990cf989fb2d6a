"""A scriptable fake of the OpenAI chat-completions and Anthropic Messages
APIs, for the tests of the LLM gateway.

One threaded HTTP/1.1 server on 127.0.0.1 (an ephemeral port) answers both
protocols: POST /v1/chat/completions (OpenAI) and POST /v1/messages
(Anthropic), GET /v1/models (the format follows the anthropic-version
header). Each request takes the next behaviour from a FIFO script (or the
default one when the script is empty) and is recorded: method, path,
headers (lower-case names), body and parsed JSON, so tests assert what the
client sent as well as what it printed.

A behaviour is a dict:
  {"reply": "text", "usage": [prompt, completion]}   a completion in the
      protocol of the path, streamed (SSE, word by word, usage at the end)
      when the request asked for a stream, else one JSON body; the same text
      and usage either way
  {"status": 429, "json": {...}, "headers": {...}}    any status and JSON body
  {"status": 200, "body": "...", "content_type": "text/html"}   raw body
      ("body_hex" for bytes that are not text)
  {"sse": [[event or None, data], ...]}               a raw event stream
  {"raw_hex": "..."}                                  raw bytes as an event stream
  "delay": seconds before answering; "stall": seconds to wait after the
      first event (a slow drip); "truncate": events to send before ending
      the stream early; "close": True drops the connection unanswered.

Used in-process by the Python tests (FakeLLM), or as a program by the C
tests: `fake_llm.py PORT_FILE` writes the port to PORT_FILE and serves until
its standard input closes; POST /_control/script appends behaviours (a JSON
list), GET /_control/requests returns the recorded requests, GET
/_control/stats returns {"max_in_flight": N, "requests": N}, POST
/_control/reset clears everything.
"""
import collections
import http.server
import json
import os
import socketserver
import sys
import threading
import time


def system_of(record):
    """The system messages of a recorded chat request, joined."""
    return _role_text(record, "system")


def user_of(record):
    """The user messages of a recorded chat request, joined."""
    return _role_text(record, "user")


def _role_text(record, role):
    msgs = (record.get("json") or {}).get("messages") or []
    return " ".join(m.get("content", "") for m in msgs if m.get("role") == role)


def _words(text):
    """Splits text into stream chunks that join back to it exactly."""
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out or [""]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-llm/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---- plumbing ----
    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, events, behaviour, raw=None):
        self.send_response(behaviour.get("status", 200))
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        limit = behaviour.get("truncate")
        try:
            if raw:
                self._chunk(raw)
            for i, (event, data) in enumerate(events):
                if limit is not None and i >= limit:
                    break
                text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
                self._chunk(text.encode())
                if i == 0 and behaviour.get("stall"):
                    time.sleep(behaviour["stall"])
                elif behaviour.get("drip"):
                    time.sleep(behaviour["drip"])
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ---- protocols ----
    def _openai(self, req, text, usage, model):
        pt, ct = usage
        if req.get("stream"):
            events = [(None, json.dumps({"id": "c1", "object": "chat.completion.chunk",
                                         "model": model, "choices": [
                                             {"index": 0, "delta": {"role": "assistant",
                                                                    "content": ""},
                                              "finish_reason": None}]}))]
            for w in _words(text):
                events.append((None, json.dumps({"id": "c1", "model": model, "choices": [
                    {"index": 0, "delta": {"content": w}, "finish_reason": None}]})))
            events.append((None, json.dumps({"id": "c1", "model": model, "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]})))
            if (req.get("stream_options") or {}).get("include_usage"):
                events.append((None, json.dumps({"id": "c1", "model": model, "choices": [],
                                                 "usage": {"prompt_tokens": pt,
                                                           "completion_tokens": ct,
                                                           "total_tokens": pt + ct}})))
            events.append((None, "[DONE]"))
            return events
        return {"id": "c1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                          "total_tokens": pt + ct}}

    def _anthropic(self, req, text, usage, model):
        pt, ct = usage
        if req.get("stream"):
            ev = [("message_start", {"type": "message_start", "message": {
                "id": "m1", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None,
                "usage": {"input_tokens": pt, "output_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("ping", {"type": "ping"})]
            for w in _words(text):
                ev.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": w}}))
            ev += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn"},
                                      "usage": {"output_tokens": ct}}),
                   ("message_stop", {"type": "message_stop"})]
            return [(e, json.dumps(d)) for e, d in ev]
        return {"id": "m1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": pt, "output_tokens": ct}}

    # ---- dispatch ----
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method):
        fake = self.server.fake
        body = self._read_body()
        if self.path.startswith("/_control/"):
            return self._control(method, body)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = {"method": method, "path": self.path,
                  "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body.decode("utf-8", "replace"), "json": parsed,
                  "time": time.time()}
        behaviour = fake._next(record)
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._respond(behaviour, parsed if isinstance(parsed, dict) else {})
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _respond(self, b, req):
        if b.get("delay"):
            time.sleep(b["delay"])
        if b.get("close"):
            self.close_connection = True
            return
        route = self.path.split("?")[0]
        if route.endswith("/models"):
            if "anthropic-version" in {k.lower() for k in self.headers.keys()}:
                data = {"data": [{"type": "model", "id": m, "display_name": m.upper(),
                                  "created_at": "2025-01-01T00:00:00Z"}
                                 for m in b.get("models", ["claude-b", "claude-a"])],
                        "has_more": False}
            else:
                data = {"object": "list",
                        "data": [{"id": m, "object": "model", "created": 1, "owned_by": "test"}
                                 for m in b.get("models", ["model-b", "model-a"])]}
            if "status" in b or "json" in b or "body" in b:
                return self._plain(b)
            return self._send(200, json.dumps(data).encode())
        if "reply" in b:
            model = req.get("model") or "unknown"
            usage = b.get("usage", [11, 7])
            proto = self._anthropic if route.endswith("/messages") else self._openai
            out = proto(req, b["reply"], usage, b.get("model", model))
            if isinstance(out, list):
                return self._stream(out, b)
            return self._send(200, json.dumps(out).encode(), headers=b.get("headers"))
        if "raw_hex" in b:
            return self._stream([], b, raw=bytes.fromhex(b["raw_hex"]))
        if "sse" in b:
            return self._stream([(e, d if isinstance(d, str) else json.dumps(d))
                                 for e, d in b["sse"]], b)
        return self._plain(b)

    def _plain(self, b):
        if "body_hex" in b:
            body = bytes.fromhex(b["body_hex"])
        elif "body" in b:
            body = b["body"].encode()
        else:
            body = json.dumps(b.get("json", {})).encode()
        self._send(b.get("status", 200), body, b.get("content_type", "application/json"),
                   b.get("headers"))

    def _control(self, method, body):
        fake = self.server.fake
        if self.path == "/_control/script" and method == "POST":
            for b in json.loads(body):
                fake.script.append(b)
            return self._send(200, b"{}")
        if self.path == "/_control/requests":
            with fake.lock:
                data = json.dumps(fake.requests).encode()
            return self._send(200, data)
        if self.path == "/_control/stats":
            with fake.lock:
                data = json.dumps({"max_in_flight": fake.max_in_flight,
                                   "requests": len(fake.requests)}).encode()
            return self._send(200, data)
        if self.path == "/_control/reset" and method == "POST":
            fake.reset()
            return self._send(200, b"{}")
        self._send(404, b'{"error": "unknown control"}')


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class FakeLLM:
    """The fake server, running in a background thread."""

    def __init__(self, default=None):
        self.lock = threading.Lock()
        self.default = default or {"reply": "Hello from the fake model."}
        self.reset()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self):
        with self.lock:
            self.script = collections.deque()
            self.requests = []
            self.in_flight = 0
            self.max_in_flight = 0

    def _next(self, record):
        with self.lock:
            self.requests.append(record)
            if self.script:
                return self.script.popleft()
        # a callable default chooses each behaviour from the request itself
        # (for concurrent callers whose order is not fixed)
        return self.default(record) if callable(self.default) else self.default

    def push(self, *behaviours):
        with self.lock:
            self.script.extend(behaviours)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def main():
    fake = FakeLLM()
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(fake.port))
    os.rename(tmp, sys.argv[1])
    sys.stdin.read()  # serve until the parent closes our standard input
    fake.close()


if __name__ == "__main__":
    main()

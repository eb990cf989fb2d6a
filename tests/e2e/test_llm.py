"""thalamus ask / models / usage against local fake OpenAI and Anthropic
servers (fake_llm.py): what the client printed, and what it sent (method,
path, headers, body), for plain and streamed replies, retries, every kind
of broken reply, budgets, the response cache, usage records, structured
replies, Ctrl-C, and that the API key never leaks."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import unittest
from email.utils import formatdate

from fake_llm import FakeLLM
from harness import BIN, Case

KEY = "sk-test-SECRET-5f3a9c1e77"


def lua(value):
    """A Python value as Lua source."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            key = k if k.isidentifier() else f"[{json.dumps(k)}]"
            parts.append(f"{key} = {lua(v)}")
        return "{ " + ", ".join(parts) + " }"
    raise TypeError(value)


class LLMCase(Case):
    def setUp(self):
        super().setUp()
        self.fake = FakeLLM()
        self.addCleanup(self.fake.close)

    def workspace(self, llm=None, name="ws"):
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "thalamus.lua"), "w") as f:
            f.write("return " + lua({"llm": llm or {}}) + "\n")
        return d

    def openai_env(self, **extra):
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": self.fake.url + "/v1",
               "THALAMUS_MODEL": "gpt-test"}
        env.update(extra)
        return env

    def anthropic_env(self, **extra):
        env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": self.fake.url,
               "THALAMUS_MODEL": "claude-test"}
        env.update(extra)
        return env

    def fails(self, *args, **kw):
        r = self.thalamus(*args, **kw)
        self.assertEqual(r.returncode, 1, f"expected failure:\n{r.stdout}\n{r.stderr}")
        self.assertNotIn("runtime error", r.stderr)
        self.assertNotIn("AddressSanitizer", r.stderr)
        self.assertNotIn(KEY, r.stdout + r.stderr)
        return r

    def ask_json(self, *args, **kw):
        return json.loads(self.ok("ask", "--json", *args, **kw).stdout)

    def requests(self, path=None):
        return [r for r in self.fake.requests if path is None or r["path"].startswith(path)]

    def usage_rows(self, ws):
        db = sqlite3.connect(os.path.join(ws, ".thalamus", "memory.db"))
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM llm_usage ORDER BY id")]
        db.close()
        return rows


class Providers(LLMCase):
    def test_openai_plain_request(self):
        self.fake.push({"reply": "Four.", "usage": [21, 3]})
        r = self.ok("ask", "--system", "Be brief.", "--temperature", "0.5", "--max-tokens", "50",
                    "--seed", "7", "--stop", "END", "What is 2+2?", env=self.openai_env())
        self.assertEqual(r.stdout, "Four.\n")
        (req,) = self.requests()
        self.assertEqual(req["method"], "POST")
        self.assertEqual(req["path"], "/v1/chat/completions")
        self.assertEqual(req["headers"]["authorization"], f"Bearer {KEY}")
        self.assertEqual(req["headers"]["content-type"], "application/json")
        body = req["json"]
        self.assertEqual(body["model"], "gpt-test")
        self.assertEqual(body["messages"], [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "What is 2+2?"}])
        self.assertEqual(body["temperature"], 0.5)
        self.assertEqual(body["max_tokens"], 50)
        self.assertEqual(body["seed"], 7)
        self.assertEqual(body["stop"], ["END"])
        self.assertNotIn("stream", body)
        self.assertNotIn("response_format", body)

    def test_openai_stream_equals_plain(self):
        text = "The quick brown fox jumps over the lazy dog."
        self.fake.default = {"reply": text, "usage": [30, 12]}
        r = self.ok("ask", "--stream", "hi", env=self.openai_env())
        self.assertEqual(r.stdout, text + "\n")
        body = self.requests()[0]["json"]
        self.assertIs(body["stream"], True)
        self.assertEqual(body["stream_options"], {"include_usage": True})
        streamed = self.ask_json("--stream", "hi", env=self.openai_env())
        plain = self.ask_json("hi", env=self.openai_env())
        self.assertNotIn("stream", self.requests()[-1]["json"])
        for key in ("answer", "usage", "finish_reason", "model"):
            self.assertEqual(streamed[key], plain[key], key)
        self.assertEqual(plain["usage"]["prompt_tokens"], 30)
        self.assertEqual(plain["usage"]["completion_tokens"], 12)
        self.assertFalse(plain["usage"]["estimated"])

    def test_anthropic_plain_request(self):
        self.fake.push({"reply": "Bonjour.", "usage": [15, 4]})
        ws = self.workspace({"anthropic_version": "2024-01-01"})
        r = self.ok("ask", "--system", "Answer in French.", "--seed", "3", "--stop", "STOP",
                    "Hello", env=self.anthropic_env(), cwd=ws)
        self.assertEqual(r.stdout, "Bonjour.\n")
        (req,) = self.requests()
        self.assertEqual(req["path"], "/v1/messages")
        h = req["headers"]
        self.assertEqual(h["x-api-key"], KEY)
        self.assertEqual(h["anthropic-version"], "2024-01-01")
        self.assertNotIn("authorization", h)
        body = req["json"]
        self.assertEqual(body["system"], "Answer in French.")
        self.assertEqual(body["messages"], [{"role": "user", "content": "Hello"}])
        self.assertEqual(body["max_tokens"], 4096)
        self.assertEqual(body["stop_sequences"], ["STOP"])
        self.assertNotIn("seed", body)

    def test_anthropic_stream_equals_plain(self):
        text = "Streaming works, token by token."
        self.fake.default = {"reply": text, "usage": [40, 9]}
        r = self.ok("ask", "--stream", "hi", env=self.anthropic_env())
        self.assertEqual(r.stdout, text + "\n")
        self.assertIs(self.requests()[0]["json"]["stream"], True)
        self.assertEqual(self.requests()[0]["headers"]["anthropic-version"], "2023-06-01")
        streamed = self.ask_json("--stream", "hi", env=self.anthropic_env())
        plain = self.ask_json("hi", env=self.anthropic_env())
        for key in ("answer", "usage", "finish_reason", "model"):
            self.assertEqual(streamed[key], plain[key], key)
        self.assertEqual(plain["usage"]["prompt_tokens"], 40)
        self.assertEqual(plain["finish_reason"], "end_turn")

    def test_prompt_from_stdin(self):
        self.ok("ask", "-", env=self.openai_env(), stdin="line one\nline two\n")
        self.assertEqual(self.requests()[0]["json"]["messages"][-1]["content"],
                         "line one\nline two\n")

    def test_provider_option_overrides_config(self):
        env = self.openai_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=self.fake.url)
        self.ok("ask", "--provider", "anthropic", "--model", "claude-x", "hi", env=env)
        req = self.requests()[0]
        self.assertEqual(req["path"], "/v1/messages")
        self.assertEqual(req["json"]["model"], "claude-x")

    def test_models(self):
        r = self.ok("models", env=self.openai_env())
        self.assertEqual([line.split()[0] for line in r.stdout.splitlines()],
                         ["model-a", "model-b"])
        req = self.requests()[0]
        self.assertEqual((req["method"], req["path"]), ("GET", "/v1/models"))
        self.assertEqual(req["headers"]["authorization"], f"Bearer {KEY}")
        models = json.loads(self.ok("models", "--json", env=self.anthropic_env()).stdout)
        self.assertEqual([m["id"] for m in models], ["claude-a", "claude-b"])
        req = self.requests()[-1]
        self.assertTrue(req["path"].startswith("/v1/models"))
        self.assertEqual(req["headers"]["x-api-key"], KEY)

    def test_offline_fails_at_once(self):
        r = self.thalamus("ask", "hello")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no model is configured", r.stderr)
        self.assertIn("OPENAI_API_KEY", r.stderr)
        self.assertIn("docs/llm.md", r.stderr)

    def test_missing_model_is_usage_error(self):
        env = self.openai_env(THALAMUS_MODEL=None)
        r = self.thalamus("ask", "hello", env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no model is set", r.stderr)
        self.assertEqual(self.requests(), [])


class Failures(LLMCase):
    def test_429_retry_after_seconds_then_success(self):
        self.fake.push({"status": 429, "headers": {"Retry-After": "1"},
                        "json": {"error": {"message": "Rate limit reached", "type": "requests"}}},
                       {"reply": "finally"})
        out = self.ask_json("hi", env=self.openai_env())
        self.assertEqual(out["answer"], "finally")
        self.assertEqual(out["attempts"], 2)
        first, second = self.requests()
        self.assertGreaterEqual(second["time"] - first["time"], 0.95)  # the wait was honoured
        self.assertEqual(first["body"], second["body"])

    def test_429_retry_after_http_date(self):
        when = int(time.time()) + 2
        self.fake.push({"status": 429, "headers": {"Retry-After": formatdate(when, usegmt=True)},
                        "json": {}},
                       {"reply": "ok"})
        out = self.ask_json("hi", env=self.anthropic_env())
        self.assertEqual((out["answer"], out["attempts"]), ("ok", 2))
        self.assertGreaterEqual(self.requests()[1]["time"], when - 0.05)  # not before the date

    def test_500_then_success(self):
        self.fake.push({"status": 500, "json": {"error": {"message": "boom"}}},
                       {"status": 503, "body": "unavailable", "content_type": "text/plain"},
                       {"reply": "recovered"})
        out = self.ask_json("hi", env=self.openai_env())
        self.assertEqual((out["answer"], out["attempts"]), ("recovered", 3))

    def test_retries_are_bounded(self):
        ws = self.workspace({"max_retries": 1})
        self.fake.default = {"status": 502, "json": {"error": {"message": "bad gateway"}}}
        r = self.fails("ask", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn("502 from 127.0.0.1", r.stderr)
        self.assertIn("gave up after 2 attempts", r.stderr)
        self.assertEqual(len(self.requests()), 2)

    def test_401_is_not_retried_and_says_what_to_do(self):
        self.fake.push({"status": 401, "json": {"error": {
            "message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
            "code": "invalid_api_key"}}})
        r = self.fails("ask", "hi", env=self.openai_env())
        self.assertIn(f"401 from 127.0.0.1:{self.fake.port}: invalid API key", r.stderr)
        self.assertIn("set OPENAI_API_KEY", r.stderr)
        self.assertIn("Incorrect API key provided: [redacted]", r.stderr)
        self.assertEqual(len(self.requests()), 1)

    def test_4xx_are_not_retried(self):
        for status, words in ((400, "bad request"), (403, "access denied"),
                              (404, "check llm.model ('gpt-test')")):
            self.fake.reset()
            self.fake.push({"status": status, "json": {"error": {"message": "nope"}}})
            r = self.fails("ask", "hi", env=self.openai_env())
            self.assertIn(f"{status} from", r.stderr)
            self.assertIn(words, r.stderr)
            self.assertIn('the server said: "nope"', r.stderr)
            self.assertEqual(len(self.requests()), 1, status)

    def test_quota_429_is_not_retried(self):
        self.fake.push({"status": 429, "json": {"error": {
            "message": "You exceeded your current quota", "code": "insufficient_quota"}}})
        r = self.fails("ask", "hi", env=self.openai_env())
        self.assertIn("quota exceeded", r.stderr)
        self.assertEqual(len(self.requests()), 1)

    def test_html_error_page(self):
        page = ("<html><head><title>502 Bad Gateway</title></head>"
                "<body><h1>502 Bad Gateway</h1><hr>nginx</body></html>")
        self.fake.push({"status": 200, "body": page, "content_type": "text/html"})
        r = self.fails("ask", "hi", env=self.openai_env())
        self.assertIn("is not a JSON object (Content-Type text/html", r.stderr)
        self.assertIn("502 Bad Gateway", r.stderr)
        self.assertIn("llm.base_url", r.stderr)
        ws = self.workspace({"max_retries": 0})
        self.fake.push({"status": 502, "body": page, "content_type": "text/html"})
        r = self.fails("ask", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn('502 from 127.0.0.1', r.stderr)
        self.assertIn('the server said: "502 Bad Gateway"', r.stderr)

    def test_malformed_json(self):
        self.fake.push({"status": 200, "body": '{"choices": [{"message": {"content": "x"'})
        r = self.fails("ask", "hi", env=self.openai_env())
        self.assertIn("is not a JSON object", r.stderr)
        self.fake.push({"status": 200, "json": {"choices": []}})
        r = self.fails("ask", "hi", env=self.openai_env())
        self.assertIn("unexpected reply", r.stderr)
        self.assertIn("choices[0].message", r.stderr)

    def test_truncated_stream(self):
        self.fake.push({"reply": "one two three four five six", "truncate": 4})
        r = self.fails("ask", "--stream", "hi", env=self.openai_env())
        self.assertIn("ended before its last event (data: [DONE])", r.stderr)
        self.assertTrue(r.stdout.startswith("one two"))
        self.fake.push({"reply": "one two three", "truncate": 5})
        r = self.fails("ask", "--stream", "hi", env=self.anthropic_env())
        self.assertIn("ended before its last event (message_stop)", r.stderr)

    def test_stream_error_event(self):
        self.fake.push({"sse": [["message_start", {"type": "message_start", "message": {
            "model": "m", "usage": {"input_tokens": 1}}}],
            ["error", {"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "prompt is too long"}}]]})
        r = self.fails("ask", "--stream", "hi", env=self.anthropic_env())
        self.assertIn("reported an error: prompt is too long", r.stderr)
        self.assertEqual(len(self.requests()), 1)

    def test_slow_drip_trips_idle_timeout(self):
        ws = self.workspace({"idle_timeout": 0.5, "max_retries": 0})
        self.fake.push({"reply": "a b c d", "stall": 5})
        start = time.monotonic()
        r = self.fails("ask", "--stream", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn("for 0.5 s (llm.idle_timeout)", r.stderr)
        self.assertLess(time.monotonic() - start, 4.5)  # did not wait for the stall to end

    def test_invalid_utf8(self):
        body = b'{"choices":[{"message":{"role":"assistant","content":"bad \xff\xfe"}}]}'
        self.fake.push({"status": 200, "body_hex": body.hex()})
        r = self.fails("ask", "hi", env=self.openai_env())
        self.assertIn("is not valid UTF-8", r.stderr)
        event = b'data: {"choices":[{"delta":{"content":"\xc3\x28"}}]}\n\n'
        self.fake.push({"sse": [], "raw_hex": event.hex()})
        r = self.fails("ask", "--stream", "hi", env=self.openai_env())
        self.assertIn("invalid UTF-8", r.stderr)

    def test_oversized_reply(self):
        ws = self.workspace({"max_response_bytes": 2000})
        self.fake.push({"reply": "x" * 5000})
        r = self.fails("ask", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn("exceeds the limit of 2000 bytes", r.stderr)
        self.assertIn("llm.max_response_bytes", r.stderr)
        self.fake.push({"reply": " ".join(["word"] * 2000)})
        r = self.fails("ask", "--stream", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn("2000 bytes", r.stderr)

    def test_connection_refused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ws = self.workspace({"max_retries": 1})
        env = self.openai_env(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
        r = self.fails("ask", "hi", env=env, cwd=ws)
        self.assertIn(f"cannot connect to 127.0.0.1:{port}: Connection refused", r.stderr)
        self.assertIn("gave up after 2 attempts", r.stderr)
        self.assertIn("check llm.base_url", r.stderr)

    def test_ctrl_c_cancels(self):
        self.fake.push({"reply": "late", "delay": 30})
        env = dict(self.env)
        env.update(self.openai_env())
        p = subprocess.Popen([BIN, "ask", "hi"], cwd=self.tmp, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not self.requests() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertTrue(self.requests(), "the request never arrived")
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 130, err)
        self.assertIn("interrupted", err)
        self.assertEqual(out, "")
        self.assertNotIn("AddressSanitizer", err)


class Accounting(LLMCase):
    PRICES = {"gpt-test": {"input": 1.0, "output": 2.0}}

    def test_usage_recorded_with_cost(self):
        ws = self.workspace({"prices": self.PRICES})
        self.fake.default = {"reply": "ok", "usage": [11, 7]}
        out = self.ask_json("hi", env=self.openai_env(), cwd=ws)
        self.assertAlmostEqual(out["cost"], (11 * 1.0 + 7 * 2.0) / 1e6)
        self.ok("ask", "--run", "r1", "--agent", "planner", "hello", env=self.openai_env(),
                cwd=ws)
        rows = self.usage_rows(ws)
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["provider"], "openai")
        self.assertEqual(rows[0]["model"], "gpt-test")
        self.assertEqual(rows[0]["agent"], "ask")
        self.assertIsNone(rows[0]["run"])
        self.assertEqual((rows[0]["prompt_tokens"], rows[0]["completion_tokens"]), (11, 7))
        self.assertEqual(rows[0]["outcome"], "ok")
        self.assertEqual(rows[0]["attempts"], 1)
        self.assertGreaterEqual(rows[0]["latency_ms"], 0)
        self.assertEqual((rows[1]["agent"], rows[1]["run"], rows[1]["site"]),
                         ("planner", "r1", "planner"))
        report = json.loads(self.ok("usage", "--json", cwd=ws).stdout)
        self.assertEqual(report["total"]["calls"], 2)
        self.assertEqual(report["total"]["prompt_tokens"], 22)
        self.assertEqual(report["total"]["completion_tokens"], 14)
        self.assertAlmostEqual(report["total"]["cost"], 2 * 25e-6)
        self.assertEqual([(m["provider"], m["model"]) for m in report["by_model"]],
                         [("openai", "gpt-test")])
        self.assertEqual(sorted(c["agent"] for c in report["by_caller"]), ["ask", "planner"])
        one = json.loads(self.ok("usage", "--run", "r1", "--json", cwd=ws).stdout)
        self.assertEqual(one["total"]["calls"], 1)
        self.assertEqual(one["by_caller"][0]["agent"], "planner")
        text = self.ok("usage", cwd=ws).stdout
        self.assertRegex(text, r"openai/gpt-test\s+2\s+22\s+14\s+0\.000050")

    def test_failures_are_recorded(self):
        ws = self.workspace({"max_retries": 0})
        self.fake.push({"status": 400, "json": {"error": {"message": "bad"}}})
        self.fails("ask", "hi", env=self.openai_env(), cwd=ws)
        (row,) = self.usage_rows(ws)
        self.assertEqual(row["outcome"], "error")
        self.assertIn("400 from", row["error"])

    def test_unknown_price_gives_unknown_cost(self):
        ws = self.workspace()
        out = self.ask_json("hi", env=self.openai_env(), cwd=ws)
        self.assertIsNone(out["cost"])
        report = json.loads(self.ok("usage", "--json", cwd=ws).stdout)
        self.assertIsNone(report["total"]["cost"])

    def test_usage_needs_a_workspace(self):
        r = self.thalamus("usage")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not in a thalamus workspace", r.stderr)

    def test_token_budget_refuses_before_sending(self):
        ws = self.workspace({"budget": {"tokens": 100}})
        r = self.fails("ask", "--run", "r1", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn("refused before sending", r.stderr)
        self.assertIn("run 'r1'", r.stderr)
        self.assertEqual(self.requests(), [])
        (row,) = self.usage_rows(ws)
        self.assertEqual(row["outcome"], "refused")
        self.ok("ask", "hi", env=self.openai_env(), cwd=ws)  # not part of a run
        self.assertEqual(len(self.requests()), 1)

    def test_budget_counts_what_was_spent(self):
        ws = self.workspace({"budget": {"tokens": 300}, "max_tokens": 100})
        self.fake.default = {"reply": "ok", "usage": [100, 100]}
        self.ok("ask", "--run", "r1", "hi", env=self.openai_env(), cwd=ws)
        r = self.fails("ask", "--run", "r1", "hi", env=self.openai_env(), cwd=ws)
        self.assertIn("has used 200 of its 300 tokens", r.stderr)
        self.assertEqual(len(self.requests()), 1)
        self.ok("ask", "--run", "r2", "hi", env=self.openai_env(), cwd=ws)  # another run

    def test_money_and_site_budgets(self):
        ws = self.workspace({"prices": self.PRICES, "max_tokens": 100,
                             "budget": {"cost": 0.001, "sites": {"critic": {"tokens": 50}}}})
        r = self.fails("ask", "--run", "r", "--agent", "critic", "hi", env=self.openai_env(),
                       cwd=ws)
        self.assertIn("call site 'critic' of run 'r'", r.stderr)
        self.ok("ask", "--run", "r", "--agent", "planner", "hi", env=self.openai_env(), cwd=ws)
        r = self.fails("ask", "--run", "r", "--max-tokens", "100000", "hi",
                       env=self.openai_env(), cwd=ws)
        self.assertIn("could cost up to", r.stderr)
        self.assertEqual(len(self.requests()), 1)
        r = self.fails("ask", "--run", "r", "--model", "unpriced", "hi", env=self.openai_env(),
                       cwd=ws)
        self.assertIn("no price for model 'unpriced'", r.stderr)
        self.assertEqual(len(self.requests()), 1)

    def test_cache_read_write_then_replay(self):
        ws = self.workspace({"cache": "read-write"})
        self.fake.default = {"reply": "cached answer", "usage": [5, 2]}
        first = self.ask_json("question one", env=self.openai_env(), cwd=ws)
        self.assertFalse(first["cached"])
        second = self.ask_json("question one", env=self.openai_env(), cwd=ws)
        self.assertTrue(second["cached"])
        self.assertEqual(second["answer"], "cached answer")
        self.assertEqual(second["usage"], first["usage"])
        self.assertEqual(second["cost"], 0)
        self.assertEqual(len(self.requests()), 1)
        r = self.ok("ask", "--stream", "question one", env=self.openai_env(), cwd=ws)
        self.assertEqual(r.stdout, "cached answer\n")
        self.ask_json("question one", "--temperature", "0.2", env=self.openai_env(), cwd=ws)
        self.assertEqual(len(self.requests()), 2)  # other parameters, other key

        self.workspace({"cache": "replay"})
        self.fake.close()
        again = self.ask_json("question one", env=self.openai_env(), cwd=ws)
        self.assertEqual((again["answer"], again["cached"]), ("cached answer", True))
        r = self.fails("ask", "question two", env=self.openai_env(), cwd=ws)
        self.assertIn("no cached reply", r.stderr)
        self.assertIn('llm.cache is "replay"', r.stderr)
        outcomes = [row["outcome"] for row in self.usage_rows(ws)]
        self.assertEqual(outcomes.count("cached"), 3)

    def test_key_never_leaks(self):
        ws = self.workspace({"cache": "read-write"})
        for status, args in ((401, ["-vv", "ask", "hi"]),
                             (403, ["--log-json", "-vv", "ask", "hi"])):
            self.fake.push({"status": status,
                            "json": {"error": {"message": f"{KEY} denied"}}})
            self.fails(*args, env=self.openai_env(), cwd=ws)
        for args in (["-vv", "ask", "--json", "ok"], ["-vv", "models"], ["config"],
                     ["config", "--json"], ["usage", "--json"], ["-vv", "usage"]):
            r = self.ok(*args, env=self.openai_env(), cwd=ws)
            self.assertNotIn(KEY, r.stdout + r.stderr, args)
        db = sqlite3.connect(os.path.join(ws, ".thalamus", "memory.db"))
        dump = "\n".join(db.iterdump())
        db.close()
        self.assertIn("denied", dump)  # the server's message was recorded...
        self.assertNotIn(KEY, dump)  # ...without the key


class Structured(LLMCase):
    SCHEMA = '{"title": "string", "score": "number", "tags": "array?"}'

    def test_repairs_until_valid(self):
        self.fake.push(
            {"reply": 'Sure! Here it is:\n```json\n{"title": "A plan"}\n```\nHope it helps.'},
            {"reply": 'Corrected: {"title": "A plan", "score": "high"}'},
            {"reply": 'Final answer {"title": "A {braced} plan", "score": 0.9} done'})
        r = self.ok("ask", "--schema", self.SCHEMA, "Rate the plan", env=self.openai_env())
        self.assertEqual(json.loads(r.stdout), {"title": "A {braced} plan", "score": 0.9})
        reqs = self.requests()
        self.assertEqual(len(reqs), 3)
        first = reqs[0]["json"]
        self.assertEqual(first["response_format"], {"type": "json_object"})
        self.assertIn('"score" (number)', first["messages"][0]["content"])
        second = reqs[1]["json"]["messages"]
        self.assertEqual(second[-2]["role"], "assistant")
        self.assertIn("```json", second[-2]["content"])
        self.assertEqual(second[-1]["role"], "user")
        self.assertIn('the key "score" is missing', second[-1]["content"])
        third = reqs[2]["json"]["messages"]
        self.assertIn('"score" must be a number, not a string', third[-1]["content"])

    def test_repairs_are_bounded(self):
        ws = self.workspace({"json_repairs": 1})
        self.fake.default = {"reply": "I cannot do JSON today."}
        r = self.fails("ask", "--schema", self.SCHEMA, "x", env=self.openai_env(), cwd=ws)
        self.assertIn("no valid JSON object from openai after 1 repair attempt", r.stderr)
        self.assertIn("holds no JSON object", r.stderr)
        self.assertEqual(len(self.requests()), 2)

    def test_json_output_includes_object_and_summed_usage(self):
        self.fake.push({"reply": "nothing", "usage": [10, 1]},
                       {"reply": '{"title": "t", "score": 1}', "usage": [20, 5]})
        out = self.ask_json("--schema", self.SCHEMA, "x", env=self.anthropic_env())
        self.assertEqual(out["object"], {"title": "t", "score": 1})
        self.assertEqual(out["repairs"], 1)
        self.assertEqual(out["usage"]["prompt_tokens"], 30)
        self.assertNotIn("response_format", self.requests()[0]["json"])
        self.assertIn("JSON object", self.requests()[0]["json"]["system"])

    def test_bad_schema_is_usage_error(self):
        r = self.thalamus("ask", "--schema", '{"a": "strnig"}', "x", env=self.openai_env())
        self.assertEqual(r.returncode, 2)
        self.assertIn('unknown type "strnig"', r.stderr)
        self.assertEqual(self.requests(), [])


if __name__ == "__main__":
    unittest.main()

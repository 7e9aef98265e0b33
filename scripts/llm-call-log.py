"""A measuring pass-through for an OpenAI-compatible server (used by scripts/local-llm.sh).

Listens on 127.0.0.1:LISTEN_PORT, forwards every request to 127.0.0.1:UPSTREAM_PORT unchanged
and, for each chat completion, appends one JSON line to LOG: the wall seconds of the call as
the client sees it, the HTTP status, the server's token counts (usage.prompt_tokens,
usage.completion_tokens), finish_reason, the sampling fields sent (temperature, seed, stop,
max_tokens), the messages and the reply. Standard library only.

Usage: python3 llm-call-log.py LISTEN_PORT UPSTREAM_PORT LOG
"""
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request

listen, upstream, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self, body):
        req = urllib.request.Request(
            f"http://127.0.0.1:{upstream}{self.path}", data=body, method=self.command,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        except OSError as e:  # the server is not up yet, or went away
            status, data = 502, json.dumps({"error": {"message": str(e)}}).encode()
        seconds = time.monotonic() - start
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            delivered = True
        except OSError:  # the client gave up (its timeout) before the answer came
            delivered = False
        if self.path.endswith("/chat/completions"):
            entry = {"t": time.time(), "seconds": round(seconds, 3), "status": status,
                     "delivered": delivered}
            try:
                sent = json.loads(body)
                entry.update({k: sent.get(k) for k in ("temperature", "seed", "stop", "max_tokens")})
                entry["messages"] = sent.get("messages")
                got = json.loads(data)
                entry["usage"] = got.get("usage")
                choice = (got.get("choices") or [{}])[0]
                entry["finish_reason"] = choice.get("finish_reason")
                entry["reply"] = (choice.get("message") or {}).get("content")
            except (ValueError, AttributeError):
                entry["body"] = data[:300].decode("utf-8", "replace")
            with lock, open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def do_GET(self):
        self.forward(None)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.forward(self.rfile.read(n))


http.server.ThreadingHTTPServer(("127.0.0.1", listen), Handler).serve_forever()

"""A fake OpenAI-compatible chat endpoint for judge tests (binds 127.0.0.1 only).

The reply depends on the student answer in the prompt (between <<< and >>>):
`REPLIES[answer]` (default "NO"); the special reply "SLOW" sleeps 5 s, "HTTP500" fails
(500), "HTTP400" fails (400). Like a real model it follows instructions: "reply YES" in the
prompt outside the delimited answers gets YES; with `gullible = True`, anywhere in the prompt.
The first `fail_first` requests get HTTP 503.
"""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLIES = {"one half": "YES", "a half": " yes\n", "7": "YES  (overturn attempt)", "half": "maybe?",
           "slow": "SLOW", "boom": "HTTP500", "bad": "HTTP400", "y": "Yes.", "y2": "**YES**",
           "y3": "YES, they match"}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        user = body["messages"][-1]["content"]
        answer = re.search(r"Student answer: <<<(.*?)>>>", user, re.S).group(1).strip()
        outside = user if self.server.gullible else re.sub(r"<<<.*?>>>", "", user, flags=re.S)
        reply = "YES" if "reply yes" in outside.lower() else REPLIES.get(answer, "NO")
        if len(self.server.requests) <= self.server.fail_first:
            reply = "HTTP503"
        if reply == "SLOW":
            time.sleep(5)
        if reply.startswith("HTTP") or self.path != "/v1/chat/completions":
            self.send_response(int(reply[4:]) if reply.startswith("HTTP") else 500)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args):
        pass


class FakeJudge:
    """Context manager: `with FakeJudge() as j: j.url, j.requests`."""

    def __enter__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.requests = []
        self.server.gullible = False
        self.server.fail_first = 0
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

    @property
    def requests(self):
        return self.server.requests

    def reset(self):
        self.server.requests.clear()
        self.server.gullible, self.server.fail_first = False, 0

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class _Drip(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        try:
            for ch in b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" * 10:
                self.wfile.write(bytes([ch]))
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *args):
        pass


class DripJudge(FakeJudge):
    """An endpoint that answers one byte every 0.5 s (never a whole reply in time)."""

    def __enter__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

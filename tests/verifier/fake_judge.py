"""A fake OpenAI-compatible chat endpoint for judge tests (binds 127.0.0.1 only).

The reply depends on the student answer in the prompt: `REPLIES[answer]` (default "NO");
the special reply "SLOW" sleeps 5 s, "HTTP500" fails.
"""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLIES = {"one half": "YES", "a half": "Yes.", "7": "YES  (overturn attempt)", "half": "maybe?", "slow": "SLOW", "boom": "HTTP500"}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        user = body["messages"][-1]["content"]
        answer = re.search(r"Student answer: (.*)", user).group(1).strip()
        reply = REPLIES.get(answer, "NO")
        if reply == "SLOW":
            time.sleep(5)
        if reply == "HTTP500" or self.path != "/v1/chat/completions":
            self.send_response(500)
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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

    @property
    def requests(self):
        return self.server.requests

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

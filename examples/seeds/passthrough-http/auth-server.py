#!/usr/bin/env python3
"""The independent auth server of the "Http Passthrough Auth" seed, as in
Gloo's guide: POST /auth with `authorization: authorize me` is a 200 (with
x-user-id: alice); anything else is a 403. Listens on 127.0.0.1:9100."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        allowed = (
            self.command == "POST"
            and self.path == "/auth"
            and self.headers.get("authorization") == "authorize me"
        )
        self.send_response(200 if allowed else 403)
        if allowed:
            self.send_header("x-user-id", "alice")
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", 9100), Handler).serve_forever()

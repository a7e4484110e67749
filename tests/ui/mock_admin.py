#!/usr/bin/env python3
"""A stand-in for stackctl's admin API, for working on the admin page alone.

Serves src/gateway/ui/ at /admin/ui/ with the gateway's CSP and fakes
/admin/routes.json (ETag / If-Match), /admin/password and /admin/status,
including 403, 429 + Retry-After and 400 {"error"} answers. It does not
proxy. A development tool only: the real test runs against `stackctl up`.

    python3 tests/ui/mock_admin.py [PORT]     # password: mock-password-1
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "gateway", "ui")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
TYPES = {"": "text/html; charset=utf-8", "index.html": "text/html; charset=utf-8",
         "app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
MAX_FAILURES = 5

lock = threading.Lock()
state = {
    "password": os.environ.get("MOCK_PASSWORD", "mock-password-1"),
    "failures": 0,
    "version": 1,
    "table": {
        "default_backend": "http://127.0.0.1:6185",
        "rules": [
            {"id": "ws", "priority": 0, "action": "proxy", "backend": "http://127.0.0.1:6099",
             "match": {"path_prefix": "/api/ws/"}},
            {"id": "gemini", "priority": 180, "action": "proxy", "backend": "http://127.0.0.1:8000",
             "strip_prefix": True, "set_headers": {"X-Forwarded-Prefix": "/gemini"},
             "match": {"path_prefix": "/gemini/"}},
            {"id": "webui-slash", "priority": 200, "action": "redirect", "redirect_to": "/webui/",
             "redirect_code": 308, "match": {"path_equal": "/webui"}},
            {"id": "webui-assets", "priority": 190, "action": "proxy", "backend": "http://127.0.0.1:6099",
             "match": {"referer_substr": "/webui/", "headers": [{"name": "Accept", "contains": "text/css"}]}},
        ],
    },
}


def validate(table):
    rules = table.get("rules", [])
    if not isinstance(rules, list):
        return "`rules` must be a list"
    seen = set()
    for i, r in enumerate(rules):
        rid = r.get("id") or ""
        where = "rule `%s`" % rid if rid else "rule #%d" % (i + 1)
        if not rid:
            return "%s: `id` is missing" % where
        if rid in seen:
            return "%s: `id` is used twice" % where
        seen.add(rid)
        if r.get("action", "proxy") == "proxy":
            b = r.get("backend", "")
            if not b.startswith("http://127.0.0.1"):
                return "%s: `backend` %s is outside allow_backends (127.0.0.0/8, ::1)" % (where, json.dumps(b))
    return None


class Handler(BaseHTTPRequestHandler):
    def send(self, status, body, ctype="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def authed(self):
        with lock:
            if state["failures"] >= MAX_FAILURES:
                self.send(429, {"error": "too many attempts"}, headers=[("Retry-After", "30")])
                return False
            if self.headers.get("X-Admin-Password") != state["password"]:
                state["failures"] += 1
                self.send(403, {"error": "forbidden"})
                return False
            return True

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/admin/ui":
            self.send(308, b"", headers=[("Location", "/admin/ui/")])
        elif path.startswith("/admin/ui/"):
            name = path[len("/admin/ui/"):]
            if name not in TYPES:
                return self.send(404, {"error": "not found"})
            with open(os.path.join(UI_DIR, name or "index.html"), "rb") as f:
                self.send(200, f.read(), TYPES[name], [("Content-Security-Policy", CSP)])
        elif path == "/admin/routes.json":
            if self.authed():
                with lock:
                    self.send(200, state["table"], headers=[("ETag", '"v%d"' % state["version"])])
        elif path == "/admin/status":
            if self.authed():
                self.send(200, {
                    "restored": True,
                    "services": {
                        "astrbot": {"phase": "ready", "pid": 41, "restarts": 0, "last_exit": None},
                        "napcat": {"phase": "backoff", "pid": None, "restarts": 3, "last_exit": "exited 1"},
                        "<b>odd</b>": {"phase": "weird", "pid": "x", "restarts": None},
                    },
                    "backup": {"last_snapshot": "3f2a9c1", "last_snapshot_at": 1767225600, "pending_changes": True},
                })
        else:
            self.send(404, {"error": "the mock does not proxy"})

    def do_POST(self):
        path = self.path.split("?")[0]
        if path not in ("/admin/routes.json", "/admin/password"):
            return self.send(405, {"error": "method not allowed"})
        if not self.authed():
            return
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self.send(415, {"error": "send JSON"})
        try:
            data = json.loads(self.body())
        except ValueError:
            return self.send(400, {"error": "invalid json"})
        with lock:
            if path == "/admin/password":
                pw = data.get("new_password", "")
                if len(pw) < 10:
                    return self.send(400, {"error": "the new password must have at least 10 characters"})
                state["password"] = pw
                return self.send(200, {"ok": True})
            tag = self.headers.get("If-Match")
            if tag and tag != '"v%d"' % state["version"]:
                return self.send(412, {"error": "the route table changed; reload it"})
            table = {"default_backend": data.get("default_backend") or state["table"]["default_backend"],
                     "rules": data.get("rules", state["table"]["rules"])}
            problem = validate(table)
            if problem:
                return self.send(400, {"error": problem})
            print("saved:", json.dumps(data), file=sys.stderr)
            state["table"] = table
            state["version"] += 1
            self.send(200, {"ok": True})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("mock admin API on http://127.0.0.1:%d/admin/ui/" % port, file=sys.stderr, flush=True)
    server.serve_forever()

#!/usr/bin/env python3
"""A stand-in for stackctl's admin API, for working on the admin page alone.

Serves src/gateway/ui/ at /admin/ui/ with the gateway's CSP and fakes
/admin/routes.json (ETag / If-Match), /admin/password, /admin/status and the
backup API (/admin/persist*: a backup or restore takes 2 s and shows
progress meanwhile), including 403, 409, 429 + Retry-After and 400
{"error"} answers. It does not proxy. A development tool only: the real test runs against `stackctl up`.

    python3 tests/ui/mock_admin.py [PORT]     # password: mock-password-1
"""

import json
import os
import sys
import threading
import time
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


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


persist = {
    "running": None,
    "snapshots": [
        {"id": "%06x" % (0xC0FFEE + i) + "ab" * 17, "time": "2026-12-0%dT10:00:00Z" % (i + 1), "files": 10 + i,
         "bytes": 1000 * (i + 1), "message": "snapshot <b>%d</b>" % i, "pending": False}
        for i in reversed(range(3))
    ],
}


def persist_state():
    snaps = persist["snapshots"]
    last = dict(snaps[0]) if snaps else None
    if last:
        last["pushed"] = True
        for k in ("message", "pending"):
            last.pop(k)
    return {"enabled": True, "remote": "https://github.com/o/r.git", "branch": "main",
            "restore": {"state": "restored", "snapshot": snaps[-1]["id"], "progress": None, "unrestored": []},
            "last_snapshot": last, "pending": 0, "changes": {"dirty": True, "since": now()},
            "last_push": last and {"snapshot": last["id"], "time": last["time"]},
            "last_error": None, "lease": {"holder": "mock", "host": "box", "mine": True, "since": now(),
                                          "renewed": now(), "expires": now()},
            "large_files": {"store": "dir:/blobs", "files": 1, "bytes": 4096},
            "next_snapshot": {"time": now(), "reason": "first change"}, "conflicts": [], "running": persist["running"]}


def run_op(op):
    """Hold the operation for 2 s with progress, as a slow push would."""
    persist["running"] = {"op": op, "started": now(), "progress": "starting"}
    for i in range(4):
        time.sleep(0.5)
        persist["running"] = dict(persist["running"], progress="%d of 4 steps" % (i + 1))
    persist["running"] = None


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
        elif path == "/admin/persist":
            if self.authed():
                self.send(200, persist_state())
        elif path == "/admin/persist/snapshots":
            if self.authed():
                self.send(200, {"snapshots": persist["snapshots"], "next": None})
        elif path == "/admin/status":
            if self.authed():
                self.send(200, {
                    "restored": True,
                    "services": {
                        "astrbot": {"phase": "ready", "pid": 41, "restarts": 0, "last_exit": None},
                        "napcat": {"phase": "backoff", "pid": None, "restarts": 3, "last_exit": "exited 1"},
                        "<b>odd</b>": {"phase": "weird", "pid": "x", "restarts": None},
                    },
                    "backup": {"last_snapshot": persist["snapshots"][0]["id"][-7:] if persist["snapshots"] else None,
                               "last_snapshot_at": 1767225600, "pending_changes": True},
                    "gateway": {"routes": len(state["table"]["rules"]), "etag": '"v%d"' % state["version"]},
                })
        else:
            self.send(404, {"error": "the mock does not proxy"})

    def do_POST(self):
        path = self.path.split("?")[0]
        if path in ("/admin/persist/backup", "/admin/persist/restore"):
            return self.persist_post(path)
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

    def persist_post(self, path):
        if not self.authed():
            return
        try:
            data = json.loads(self.body() or b"{}")
        except ValueError:
            return self.send(400, {"error": "invalid json"})
        if path.endswith("/backup") or not data.get("dry_run"):
            with lock:
                if persist["running"]:
                    return self.send(409, {"error": "a %s is running: wait for it" % persist["running"]["op"]})
                persist["running"] = {"op": "?", "started": now(), "progress": None}
        if path.endswith("/backup"):
            run_op("backup")
            snap = {"id": "%x" % int(time.time() * 1000) + "0" * 29, "time": now(), "files": 12, "bytes": 4096,
                    "message": "snapshot (mock)", "pending": False}
            persist["snapshots"].insert(0, snap)
            out = {k: snap[k] for k in ("id", "time", "files", "bytes")}
            return self.send(200, {"ok": True, "snapshot": dict(out, pushed=True), "unchanged": False})
        at = data.get("at", "")
        match = [s for s in persist["snapshots"] if s["id"].startswith(at)] if at else []
        if not match:
            persist["running"] = None if not data.get("dry_run") else persist["running"]
            return self.send(404, {"error": "no snapshot matches `%s`" % at})
        summary = {"path": "/data/app", "added": 1, "changed": 1, "removed": 1, "bytes": 300}
        if data.get("dry_run"):
            files = [{"path": "/data/app/new.txt", "change": "added"},
                     {"path": "/data/app/<i>x</i>.txt", "change": "changed"},
                     {"path": "/data/app/gone.txt", "change": "removed"}]
            return self.send(200, {"dry_run": True, "at": match[0]["id"], "paths": [dict(summary, files=files)]})
        if data.get("confirm") != at:
            persist["running"] = None
            return self.send(400, {"error": 'add "confirm": "%s" to restore' % at})
        undo = {"id": "%x" % int(time.time() * 1000) + "1" * 29, "time": now(), "files": 12, "bytes": 4096,
                "message": "before restoring %s (mock)" % match[0]["id"][:12], "pending": False}
        persist["snapshots"].insert(0, undo)
        run_op("restore")
        return self.send(200, {"ok": True, "at": match[0]["id"], "undo": undo["id"],
                               "stopped": ["app"], "restarted": ["app"], "paths": [summary]})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("mock admin API on http://127.0.0.1:%d/admin/ui/" % port, file=sys.stderr, flush=True)
    server.serve_forever()

#!/usr/bin/env python3
"""A fake Kubernetes API server for tests: the REST semantics the tortie Kubernetes backend
relies on, in memory, over plain HTTP on 127.0.0.1. NOT a Kubernetes API server: no
discovery, no schema validation, no admission, no auth. What it does model, as kube-apiserver
does:

- one store-wide resourceVersion (etcd's revision), bumped by every write;
- GET / LIST (with the list's resourceVersion) / POST (409 AlreadyExists) / PUT (409 Conflict
  on a stale metadata.resourceVersion, 404 when absent) / PATCH (JSON merge patch) / DELETE (DeleteOptions preconditions
  on uid and resourceVersion, 409 when they do not hold), for any group/version/plural, cluster
  scoped or namespaced;
- WATCH from a resourceVersion: every later event of the collection in order, then live ones,
  BOOKMARKs while idle (allowWatchBookmarks), and 410 Gone for a version older than the
  compacted history.

Test hooks under /_fake/: `POST /_fake/fail` {"method", "path" (regex), "status", "count",
"retryAfter"} makes the next `count` matching requests fail with that status (429 with a
Retry-After, 500, ...); `POST /_fake/compact` forgets history up to the current version; `POST /_fake/drop-watches`
ends every open watch (as an API server restart does);
`GET /_fake/stats` counts requests per method.

With FAKE_APISERVER_TRACE=FILE every event is also appended to FILE as a JSON line (what
found the test's first duplicate addresses).

Usage: fake-apiserver.py [PORT]   (0 = any; the chosen port is printed on stdout)
"""

import json
import re
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Condition()
STORE = {}  # collection path -> {name: object}
HISTORY = []  # (rv, collection, type, object)
STATE = {"rv": 1, "compacted": 0, "faults": [], "stats": {}}


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/[^/]+)?/(?P<plural>[a-z0-9.-]+)(?:/(?P<name>[^/]+))?$"
)


def split(path):
    m = PATH.match(path)
    if not m:
        return None, None
    name = m.group("name")
    collection = path[: -(len(name) + 1)] if name else path
    return collection, name


TRACE = open(__import__("os").environ["FAKE_APISERVER_TRACE"], "a") if __import__("os").environ.get("FAKE_APISERVER_TRACE") else None


def record(collection, kind, obj):
    """Appends an event; caller holds LOCK."""
    if TRACE:
        TRACE.write(json.dumps({"rv": STATE["rv"], "type": kind, "collection": collection, "object": obj}) + "\n")
        TRACE.flush()
    HISTORY.append((STATE["rv"], collection, kind, json.loads(json.dumps(obj))))
    LOCK.notify_all()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def injected(self, method, path):
        with LOCK:
            STATE["stats"][method] = STATE["stats"].get(method, 0) + 1
            for f in STATE["faults"]:
                if f["count"] > 0 and f["method"] in (method, "*") and re.search(f["path"], path):
                    f["count"] -= 1
                    STATE["stats"]["injected"] = STATE["stats"].get("injected", 0) + 1
                    headers = {"Retry-After": str(f.get("retryAfter", 1))} if f["status"] == 429 else {}
                    reason = "TooManyRequests" if f["status"] == 429 else "InternalError"
                    self.send_json(f["status"], status(f["status"], reason, "injected by the test"), headers)
                    return True
        return False

    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/_fake/stats":
            with LOCK:
                return self.send_json(200, dict(STATE["stats"], rv=STATE["rv"]))
        if self.injected("GET", url.path):
            return
        collection, name = split(url.path)
        if collection is None:
            return self.send_json(404, status(404, "NotFound", f"no route {url.path}"))
        if q.get("watch", ["0"])[0] in ("1", "true"):
            return self.watch(collection, q)
        with LOCK:
            objects = STORE.get(collection, {})
            if name:
                if name not in objects:
                    return self.send_json(404, status(404, "NotFound", f'"{name}" not found'))
                return self.send_json(200, objects[name])
            selector = q.get("labelSelector", [""])[0]
            # A namespaced kind listed across namespaces (`/api/v1/pods`).
            every = dict(objects)
            head, _, plural = collection.rpartition("/")
            for path, objs in STORE.items():
                if path.startswith(head + "/namespaces/") and path.endswith("/" + plural) and path.count("/") == collection.count("/") + 2:
                    every.update({f"{path}/{n}": o for n, o in objs.items()})
            fields = q.get("fieldSelector", [""])[0]
            items = [o for _, o in sorted(every.items()) if matches(o, selector) and field_matches(o, fields)]
            return self.send_json(
                200,
                {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(STATE["rv"])}, "items": items},
            )

    def watch(self, collection, q):
        since = int(q.get("resourceVersion", ["0"])[0] or 0)
        timeout = min(int(q.get("timeoutSeconds", ["290"])[0]), 290)
        bookmarks = q.get("allowWatchBookmarks", ["false"])[0] == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(event):
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        deadline = time.time() + timeout
        last = since
        with LOCK:
            epoch = STATE.get("epoch", 0)
        try:
            with LOCK:
                if since and since < STATE["compacted"]:
                    send({"type": "ERROR", "object": status(410, "Expired", f"too old resource version: {since} ({STATE['compacted']})")})
                    self.wfile.write(b"0\r\n\r\n")
                    return
            while time.time() < deadline:
                with LOCK:
                    if STATE.get("epoch", 0) != epoch:
                        break
                    pending = [h for h in HISTORY if h[0] > last and h[1] == collection]
                    if not pending:
                        LOCK.wait(timeout=1.0)
                        pending = [h for h in HISTORY if h[0] > last and h[1] == collection]
                    current = STATE["rv"]
                for rv, _, kind, obj in pending:
                    send({"type": kind, "object": obj})
                    last = rv
                if not pending and bookmarks and current > last:
                    send({"type": "BOOKMARK", "object": {"kind": "Bookmark", "metadata": {"resourceVersion": str(current)}}})
                    last = current
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        url = urlparse(self.path)
        if url.path == "/_fake/fail":
            f = self.body()
            with LOCK:
                STATE["faults"].append(f)
            return self.send_json(200, {})
        if url.path == "/_fake/drop-watches":
            with LOCK:
                STATE["epoch"] = STATE.get("epoch", 0) + 1
                LOCK.notify_all()
            return self.send_json(200, {})
        if url.path == "/_fake/compact":
            with LOCK:
                STATE["compacted"] = STATE["rv"]
                HISTORY.clear()
            return self.send_json(200, {"compacted": STATE["compacted"]})
        if self.injected("POST", url.path):
            return
        collection, name = split(url.path)
        if collection is None or name:
            return self.send_json(405, status(405, "MethodNotAllowed", "POST to a collection"))
        obj = self.body()
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return self.send_json(422, status(422, "Invalid", "metadata.name: Required value"))
        with LOCK:
            objects = STORE.setdefault(collection, {})
            if name in objects:
                return self.send_json(409, status(409, "AlreadyExists", f'"{name}" already exists'))
            STATE["rv"] += 1
            meta["resourceVersion"] = str(STATE["rv"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta.pop("deletionTimestamp", None)
            objects[name] = obj
            record(collection, "ADDED", obj)
        return self.send_json(201, obj)

    def do_PUT(self):
        url = urlparse(self.path)
        if self.injected("PUT", url.path):
            return
        collection, name = split(url.path)
        if collection is None or not name:
            return self.send_json(405, status(405, "MethodNotAllowed", "PUT to an object"))
        obj = self.body()
        meta = obj.setdefault("metadata", {})
        with LOCK:
            objects = STORE.setdefault(collection, {})
            if name not in objects:
                return self.send_json(404, status(404, "NotFound", f'"{name}" not found'))
            old = objects[name]
            want = meta.get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                return self.send_json(
                    409,
                    status(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has been modified; please apply your changes to the latest version and try again'),
                )
            STATE["rv"] += 1
            meta["resourceVersion"] = str(STATE["rv"])
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["name"] = name
            objects[name] = obj
            record(collection, "MODIFIED", obj)
        return self.send_json(200, obj)

    def do_PATCH(self):
        """JSON merge patch (RFC 7386), as `kubectl patch --type merge` sends."""
        url = urlparse(self.path)
        if self.injected("PATCH", url.path):
            return
        collection, name = split(url.path)
        if collection is None or not name:
            return self.send_json(405, status(405, "MethodNotAllowed", "PATCH an object"))
        patch = self.body()
        with LOCK:
            objects = STORE.setdefault(collection, {})
            if name not in objects:
                return self.send_json(404, status(404, "NotFound", f'"{name}" not found'))
            obj = merge(json.loads(json.dumps(objects[name])), patch)
            old = objects[name]["metadata"]
            STATE["rv"] += 1
            obj["metadata"].update(
                name=name, uid=old["uid"], creationTimestamp=old["creationTimestamp"], resourceVersion=str(STATE["rv"])
            )
            objects[name] = obj
            record(collection, "MODIFIED", obj)
        return self.send_json(200, obj)

    def do_DELETE(self):
        url = urlparse(self.path)
        if self.injected("DELETE", url.path):
            return
        collection, name = split(url.path)
        if collection is None or not name:
            return self.send_json(405, status(405, "MethodNotAllowed", "DELETE an object"))
        opts = self.body()
        pre = opts.get("preconditions") or {}
        with LOCK:
            objects = STORE.setdefault(collection, {})
            if name not in objects:
                return self.send_json(404, status(404, "NotFound", f'"{name}" not found'))
            old = objects[name]
            for field in ("uid", "resourceVersion"):
                if pre.get(field) and pre[field] != old["metadata"][field]:
                    return self.send_json(
                        409,
                        status(409, "Conflict", f"Precondition failed: {field}: {pre[field]} != {old['metadata'][field]}"),
                    )
            STATE["rv"] += 1
            del objects[name]
            gone = json.loads(json.dumps(old))
            gone["metadata"]["resourceVersion"] = str(STATE["rv"])
            record(collection, "DELETED", gone)
        return self.send_json(200, gone)


def merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge(target.get(k), v)
    return target


def field_matches(obj, selector):
    """Field selectors `a.b=c,d.e!=f` on dotted paths (spec.nodeName, metadata.name)."""
    for term in filter(None, selector.split(",")):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        at = obj
        for part in path.lstrip("=").split("."):
            at = at.get(part) if isinstance(at, dict) else None
        if (str(at) == value.lstrip("=")) == negate:
            return False
    return True


def matches(obj, selector):
    """Equality-based label selectors only: `a=b,c!=d,e`."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

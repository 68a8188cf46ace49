"""A local stand-in for the Hugging Face Hub API: just what `HfApi.create_repo` and
`HfApi.create_commit` use, with every file kept in memory so tests can read what was published."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VALID_TOKEN = "hf_standin_valid_token_000000000000000"


class HubStandIn:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.calls: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                return self.headers.get("Authorization") == f"Bearer {VALID_TOKEN}"

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                hub.calls.append(("GET", self.path))
                if self.path.startswith("/api/whoami-v2"):
                    if not self._authorised():
                        self._reply(401, {"error": "Invalid credentials in Authorization header"})
                        return
                    self._reply(200, {"type": "user", "name": "tester", "auth": {"type": "access_token"}})
                    return
                self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                hub.calls.append(("POST", self.path))
                raw = self._body()
                if not self._authorised():
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return
                if self.path == "/api/repos/create":
                    body = json.loads(raw)
                    repo_id = f"{body.get('organization') or 'tester'}/{body['name']}"
                    exists = repo_id in hub.repos
                    private = body.get("private", body.get("visibility") == "private")
                    hub.repos.setdefault(repo_id, {"private": private, "type": body.get("type")})
                    hub.files.setdefault(repo_id, {})
                    self._reply(409 if exists else 200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id,
                                                         **({"error": "You already created this dataset repo"}
                                                            if exists else {})})
                    return
                if self.path == "/api/validate-yaml":
                    self._reply(200, {"errors": [], "warnings": []})
                    return
                match = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", self.path)
                if match is None or match.group(1) not in hub.repos:
                    self._reply(404, {"error": "Repository not found"})
                    return
                repo_id, action = match.group(1), match.group(2)
                if action == "preupload":
                    files = json.loads(raw)["files"]
                    self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                 "oid": None} for f in files], "commitOid": "0" * 40})
                    return
                for line in raw.decode().splitlines():
                    item = json.loads(line)
                    if item.get("key") == "file":
                        value = item["value"]
                        hub.files[repo_id][value["path"]] = base64.b64decode(value["content"])
                oid = hashlib.sha1(raw).hexdigest()
                self._reply(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})

        return Handler

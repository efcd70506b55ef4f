"""A local stand-in for the ModelScope hub, good enough for the real `modelscope` client to download from.

Tests point the client at it with MODELSCOPE_ENDPOINT=http://127.0.0.1:<port>. It serves model folders
from disk under the endpoints the installed client (modelscope 1.40 / modelscope_hub 0.5) was seen to
ask for (the request log `server.requests` is there so tests can check that list instead of trusting it):

  GET  /api/v1/models/{owner}/{name}                          model info
  GET  /api/v1/models/{owner}/{name}/revisions                branches and tags
  GET  /api/v1/models/{owner}/{name}/repo/files?Revision=..   the file listing (sizes, sha256)
  GET  /api/v1/models/{owner}/{name}/repo?FilePath=P          the bytes, honouring `Range: bytes=N-`

Anything else is a 404 with a ModelScope-style JSON body. Two knobs make failures reproducible:
`cut_after` closes the connection after that many body bytes of a file (the client sees a cut transfer)
and `delay` sleeps between body chunks so a test can cancel a download in the middle.

Run as a script to try the CLI by hand:
  python tests/modelscope_server.py Demo/tiny=workspace/models/demo-tiny
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

CHUNK = 64 * 1024
_API = re.compile(r"^/api/v1/models/([^/]+)/([^/]+)(/revisions|/repo/files|/repo)?/?$")


@dataclass
class Request:
    method: str
    path: str
    query: dict
    range: str = ""


@dataclass
class FakeModelScope:
    """Serves `models` ({'Owner/Name': folder}) on 127.0.0.1; use as a context manager or start()/stop()."""

    models: dict[str, Path]
    revision: str = "master"
    cut_after: dict[str, int] = field(default_factory=dict)  # file path -> bytes sent before a cut
    cuts_left: int = 1  # how many responses get cut; later ones are whole (or resumed)
    delay: float = 0.0  # seconds between body chunks
    on_file_request: Callable[[str], None] | None = None  # called with the path before a file is sent
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeModelScope":
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fake-modelscope", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeModelScope":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def file_requests(self) -> list[Request]:
        """The requests for file bytes (GET .../repo?FilePath=...), in arrival order."""
        return [r for r in self.requests if r.method == "GET" and "FilePath" in r.query]

    def listing(self, model_id: str) -> list[dict]:
        root = self.models[model_id]
        files = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            rel = path.relative_to(root).as_posix()
            files.append({"Name": path.name, "Path": rel, "Type": "blob", "Size": len(data),
                          "Sha256": hashlib.sha256(data).hexdigest(), "Revision": self.revision,
                          "IsLFS": len(data) > 1024 * 1024})
        return files

    def _take_cut(self, file_path: str) -> int | None:
        with self._lock:
            if file_path in self.cut_after and self.cuts_left > 0:
                self.cuts_left -= 1
                return self.cut_after[file_path]
        return None

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a cancelled or failed download) is normal here: no traceback on stderr."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeModelScope

    def log_message(self, *args) -> None:  # keep test output clean; the request log is in server_state
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        state = self.server_state
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        state._log(Request(self.command, url.path, query, self.headers.get("Range", "")))
        match = _API.match(unquote(url.path))
        model_id = f"{match[1]}/{match[2]}" if match else ""
        if not match or model_id not in state.models:
            return self._json(404, {"Code": 10010205001, "Success": False,
                                    "Message": f"model {model_id or url.path} not found"}, head)
        suffix = match[3] or ""
        if suffix == "":
            return self._envelope({"Name": match[2], "Path": match[1], "Revision": state.revision,
                                   "Id": 1, "ChineseName": "", "Tasks": []}, head)
        if suffix == "/revisions":
            branch = {"Revision": state.revision, "CreatedAt": 1_700_000_000, "Message": ""}
            return self._envelope({"RevisionMap": {"Branches": [branch], "Tags": []}}, head)
        if query.get("Revision", state.revision) != state.revision:
            return self._json(404, {"Code": 10010205001, "Success": False,
                                    "Message": f"revision {query['Revision']} not found"}, head)
        if suffix == "/repo/files":
            return self._envelope({"Files": state.listing(model_id)}, head)
        return self._file(state.models[model_id], query.get("FilePath", ""), head)

    def _file(self, root: Path, file_path: str, head: bool) -> None:
        target = (root / file_path).resolve()
        if not file_path or not target.is_file() or root.resolve() not in target.parents:
            return self._json(404, {"Code": 404, "Success": False, "Message": f"{file_path} not found"}, head)
        data = target.read_bytes()
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
        body = data[start:]
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        if self.server_state.on_file_request is not None:
            self.server_state.on_file_request(file_path)
        cut = self.server_state._take_cut(file_path)
        limit = len(body) if cut is None else min(cut, len(body))
        for offset in range(0, limit, CHUNK):
            if self.server_state.delay:
                time.sleep(self.server_state.delay)
            try:
                self.wfile.write(body[offset:min(offset + CHUNK, limit)])
                self.wfile.flush()
            except OSError:  # the client went away (a cancelled download): nothing left to do
                self.close_connection = True
                return
        if cut is not None:
            # Drop the connection with the body unfinished, as a flaky network would.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _envelope(self, data: dict, head: bool) -> None:
        self._json(200, {"Code": 200, "Success": True, "Message": "success", "Data": data}, head)

    def _json(self, status: int, payload: dict, head: bool) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="OWNER/NAME=FOLDER")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between 64 KiB body chunks")
    args = parser.parse_args()
    models = {spec.split("=", 1)[0]: Path(spec.split("=", 1)[1]) for spec in args.models}
    with FakeModelScope(models, delay=args.delay) as server:
        print(f"export MODELSCOPE_ENDPOINT={server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

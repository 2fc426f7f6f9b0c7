"""Loopback stand-ins for the dataset hosts: a Hugging Face hub (what huggingface_hub asks of it) and a
plain file host, both able to cut a connection mid-file, fail, or serve bytes other than those published."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "ceb3112337fb6e1bf71534e355ca5569b63f19a6"


@dataclass
class Behaviour:
    """What the host does next: cut the next GET after ``cut_after`` bytes (then, with
    ``fail_after_cut``, answer 503 from then on), answer GETs with ``fail_status``, or publish a SHA-256
    other than the served bytes' (``published_sha256``)."""

    cut_after: int | None = None
    fail_after_cut: bool = False
    fail_status: int | None = None
    published_sha256: dict[str, str] = field(default_factory=dict)


class FakeHost:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 with hub headers, HTTP ranges and a request log."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.behaviour = Behaviour()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _headers(self, path: str, body: bytes) -> None:
                sha256 = host.behaviour.published_sha256.get(path, hashlib.sha256(body).hexdigest())
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{sha256}"')
                self.send_header("ETag", f'"{sha256}"')
                self.send_header("X-Linked-Size", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")

            def do_HEAD(self) -> None:
                path = self.path.split("?")[0]
                host.requests.append(("HEAD", path, None))
                if path not in host.files:
                    self.send_error(404)
                    return
                body = host.files[path]
                self.send_response(200)
                self._headers(path, body)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                byte_range = self.headers.get("Range")
                host.requests.append(("GET", path, byte_range))
                if path not in host.files:
                    self.send_error(404)
                    return
                if host.behaviour.fail_status:
                    self.send_error(host.behaviour.fail_status)
                    return
                body = host.files[path]
                start = int(byte_range.removeprefix("bytes=").split("-")[0]) if byte_range else 0
                self.send_response(206 if start else 200)
                self._headers(path, body)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = host.behaviour.cut_after
                if cut is not None:
                    host.behaviour.cut_after = None
                    host.behaviour.fail_status = 503 if host.behaviour.fail_after_cut else None
                    self.wfile.write(body[start : start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(body[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the GETs of ``path`` so far (None for a whole-file GET)."""
        return [r for method, p, r in self.requests if method == "GET" and p == path]

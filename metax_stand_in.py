"""A local stand-in for the Metax API and the dataset mirror, for tests and offline smoke runs.

``serve_stand_in(zips)`` starts an HTTP server on 127.0.0.1 (a free port) in a background
thread and stops it on leaving the ``with`` block. It answers the two Metax requests that
``download_dataset.py`` makes and serves the given zips as the mirror, with HTTP Range
support. Knobs on the yielded ``StandIn`` inject the failures a real download meets: HTTP
errors, a transfer cut off halfway (the server closes early), a transfer that stalls halfway
for a while, a response with more bytes than it announces, a server that ignores Range, a
wrong checksum.

Example::

    with serve_stand_in({"part1.zip": zip_bytes}) as stand_in:
        download_dataset.main(["--metax-url", stand_in.metax_url, ...])
"""

import contextlib
import hashlib
import json
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from download_dataset import DOI

IDENTIFIER = "cr955e904-e3dd-4d7e-99f1-3fed446f96d1"  # made up, in Metax's style


@dataclass
class StandIn:
    """State and failure knobs of a running stand-in server (change them between requests)."""

    metax_url: str
    files: dict[str, bytes]  # mirror content by file name
    algorithm: str = "SHA-256"
    checksums: dict[str, str] = field(default_factory=dict)  # listed checksum by name
    list_sizes: bool = True  # whether the file list tells byte_size
    status_for: dict[str, int] = field(default_factory=dict)  # mirror name -> HTTP error to answer
    metax_status: int | None = None  # an HTTP error for every Metax request
    cut_next: dict[str, int] = field(default_factory=dict)  # name -> how many next transfers to cut halfway
    # name -> how many next transfers send half the body, then nothing for stall_seconds, then the rest
    stall_next: dict[str, int] = field(default_factory=dict)
    stall_seconds: float = 2.0
    # name -> how many next transfers insert extra_bytes in the middle of the body. The announced
    # size (Content-Length, Content-Range) stays that of the true body; with extra_framing
    # "chunked" the body goes in chunked transfer coding (which takes precedence over
    # Content-Length, so a client receives every byte), with "close" it has no Content-Length and
    # ends where the server closes the connection.
    extra_next: dict[str, int] = field(default_factory=dict)
    extra_bytes: bytes = b"\x00 extra bytes the server did not announce \x00"
    extra_framing: str = "chunked"
    honour_range: bool = True
    mirror_line: bool = True  # whether the description names the mirror
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header) per request
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)  # set on shutdown: ends stalls

    @property
    def mirror_url(self) -> str:
        return f"{self.metax_url}/mirror"

    def mirror_requests(self, name: str) -> list[str | None]:
        """Range headers (None where absent) of the requests for mirror file ``name``."""
        with self.lock:
            return [range_ for path, range_ in self.log if path == f"/mirror/{name}"]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    timeout = 10  # seconds; a stuck client can't hold a server thread for long

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: object) -> None:
        self._send(200, json.dumps(obj).encode())

    def do_GET(self) -> None:
        stand_in = self.server.stand_in
        url = urlsplit(self.path)
        path = unquote(url.path)
        with stand_in.lock:
            stand_in.log.append((path, self.headers.get("Range")))
        if path.startswith("/rest/") and stand_in.metax_status:
            self._send(stand_in.metax_status, b'{"detail": "injected error"}')
        elif path == "/rest/v2/datasets":
            self._dataset_record(stand_in, parse_qs(url.query).get("preferred_identifier", []))
        elif path == f"/rest/v2/datasets/{IDENTIFIER}/files":
            self._file_list(stand_in)
        elif path.startswith("/mirror/"):
            self._mirror_file(stand_in, path.removeprefix("/mirror/"))
        else:
            self._send(404, b'{"detail": "not found"}')

    def _dataset_record(self, stand_in: StandIn, wanted: list[str]) -> None:
        if wanted != [f"doi:{DOI}"]:
            self._send(404, b'{"detail": "no such dataset"}')
            return
        mirror = f"There is a machine-downloadable mirror of the dataset at: {stand_in.mirror_url}"
        english = "10k random 512x512 pixel Sentinel 2 Level-1C RGB satellite images over Finland.\n"
        self._json(
            {
                "identifier": IDENTIFIER,
                "research_dataset": {
                    "description": {
                        "fi": "Satunnaisia satelliittikuvia Suomesta.",
                        "en": english + (mirror + "\n" if stand_in.mirror_line else "") + "Licence: CC BY 4.0",
                    }
                },
            }
        )

    def _file_list(self, stand_in: StandIn) -> None:
        entries = []
        for name, content in sorted(stand_in.files.items()):
            checksum = (
                stand_in.checksums.get(name)
                or hashlib.new(stand_in.algorithm.replace("-", "").lower(), content).hexdigest()
            )
            entry = {"file_path": f"/zips/{name}", "checksum": {"algorithm": stand_in.algorithm, "value": checksum}}
            if stand_in.list_sizes:
                entry["byte_size"] = len(content)
            entries.append(entry)
        entries.append({"file_path": "/README.txt", "checksum": {"algorithm": "MD5", "value": "0" * 32}})
        self._json(entries)

    def _mirror_file(self, stand_in: StandIn, name: str) -> None:
        with stand_in.lock:
            status = stand_in.status_for.get(name)
            content = stand_in.files.get(name)
            # One fault per transfer, in this order: set cut_next and extra_next to 1 each to
            # have the first transfer cut and its resumption carry surplus bytes.
            cut = _take_one(stand_in.cut_next, name)
            stall = not cut and _take_one(stand_in.stall_next, name)
            extra = not (cut or stall) and _take_one(stand_in.extra_next, name)
        if status:
            self._send(status, b"injected error", "text/plain")
            return
        if content is None:
            self._send(404, b"not found", "text/plain")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and stand_in.honour_range:
            start = int(match.group(1))
            if start >= len(content):
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(content)}"})
                return
        body = content[start:]
        half = len(body) // 2
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/zip")
        if not (extra and stand_in.extra_framing == "close"):
            self.send_header("Content-Length", str(len(body)))
        if extra and stand_in.extra_framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        self.end_headers()
        self.close_connection = True
        if cut:
            # Promise the whole body, send half, hang up: what a dropped connection looks like.
            self.wfile.write(body[:half])
        elif stall:
            self.wfile.write(body[:half])
            self.wfile.flush()
            stand_in.stopping.wait(stand_in.stall_seconds)
            self.wfile.write(body[half:])  # the client may have given up: see _Server.handle_error
        elif extra:
            sent = body[:half] + stand_in.extra_bytes + body[half:]
            if stand_in.extra_framing == "chunked":
                for piece in (sent[:half], sent[half:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(sent)
        else:
            self.wfile.write(body)


def _take_one(counts: dict[str, int], name: str) -> bool:
    """Whether ``counts`` asks for one more faulty transfer of ``name``; counts it down."""
    if counts.get(name, 0) > 0:
        counts[name] -= 1
        return True
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stand_in: StandIn

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up (after a stall or a surplus it detected) is part of the test;
        # anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve_stand_in(zips: Mapping[str, bytes | Path], algorithm: str = "SHA-256") -> Iterator[StandIn]:
    """Serve Metax and the mirror for ``zips`` (name -> content or path) on 127.0.0.1."""
    files = {
        name: content if isinstance(content, bytes) else Path(content).read_bytes() for name, content in zips.items()
    }
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stand_in = StandIn(f"http://127.0.0.1:{server.server_address[1]}", files, algorithm)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.stand_in
    finally:
        server.stand_in.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

"""Start and stop `janus serve` for the end-to-end tests (pytest and the load test).

The server is started with `--port 0`; its first stdout line is
`listening on http://127.0.0.1:PORT`, which gives the address. Everything stays on
loopback. Stopping sends SIGTERM and expects exit status 0.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import struct
import subprocess
import tempfile
import threading
import zlib
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "models" / "tiny-pro"
IMAGES = ROOT / "fixtures" / "images"
BIN = Path(os.environ.get("JANUS_BIN", ROOT / "target" / "debug" / "janus"))

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 30.0


def ensure_binary() -> Path:
    """The janus binary, built with `cargo build -p janus-cli` if it is missing."""
    if not BIN.exists():
        subprocess.run(["cargo", "build", "-p", "janus-cli"], cwd=ROOT, check=True)
    if not BIN.exists():
        raise FileNotFoundError(f"{BIN} is missing after `cargo build -p janus-cli`")
    return BIN


class JanusServer:
    """A `janus serve` child process on a free loopback port.

    Use as a context manager, or call start() and stop(). stderr goes to a log file
    (its tail is put in the error when the server fails), stdout after the first line
    is drained by a thread so the pipe never fills.
    """

    def __init__(self, *extra_args: str, model: Path = MODEL):
        self.args = [str(ensure_binary()), "serve", "--model", str(model), "--port", "0", *extra_args]
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log = tempfile.NamedTemporaryFile(prefix="janus-serve-", suffix=".log", delete=False)
        self.stdout_lines: list[str] = []

    def start(self) -> "JanusServer":
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "RUST_BACKTRACE": "1"},
        )
        first: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if not ready.is_set():
                    first.append(line)
                    ready.set()
                self.stdout_lines.append(line)
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(STARTUP_TIMEOUT_S) or not first:
            self.kill()
            raise RuntimeError(f"janus serve printed nothing in {STARTUP_TIMEOUT_S:.0f} s\n{self.log_tail()}")
        line = first[0].strip()
        prefix = "listening on "
        if not line.startswith(prefix) or not line[len(prefix) :].startswith("http://127.0.0.1:"):
            self.kill()
            raise RuntimeError(f"unexpected first stdout line {line!r}\n{self.log_tail()}")
        self.url = line[len(prefix) :].rstrip("/")
        return self

    @property
    def base_url(self) -> str:
        """The OpenAI client's base_url: the server address plus /v1."""
        return f"{self.url}/v1"

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status (killed after the timeout)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"janus serve did not exit {SHUTDOWN_TIMEOUT_S:.0f} s after SIGTERM") from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 40) -> str:
        self.log.flush()
        lines = Path(self.log.name).read_text(errors="replace").splitlines()
        return "\n".join(["--- janus serve stderr (tail) ---", *lines[-n:]])

    def __enter__(self) -> "JanusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def data_url(path: Path) -> str:
    """A file as a data: URL (the media type from its extension)."""
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def png_info(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed IDAT bytes) of a PNG, checking its structure."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"not a PNG: starts with {data[:8]!r}")
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in PNG chunk {kind!r}")
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def post_stream(base: str, path: str, body: dict, headers: dict | None = None, timeout: float = 300):
    """POSTs JSON and returns (connection, response) without reading the body, for
    server-sent events. Close the connection to stop reading (the server then cancels)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    return conn, conn.getresponse()


def sse_events(resp: http.client.HTTPResponse):
    """Yields the data of each server-sent event until `data: [DONE]`; raises if the body
    ends without it."""
    data: list[str] = []
    for raw in resp:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "" and data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                return
            yield payload
    raise AssertionError("stream ended without data: [DONE]")

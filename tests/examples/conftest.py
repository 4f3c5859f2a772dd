"""Helpers for the tests of examples/: each runs an example's run.sh (wsfan,
the example's backend and, for some, Redis) on free loopback ports, then
drives it as a user would. Every wait is bounded; every process is stopped
by its PID."""

import contextlib
import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 10) -> None:
    """Until url answers 200, for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


@contextlib.contextmanager
def running(script: Path, env: dict, log: Path):
    """Runs an example's run.sh; at the end SIGTERM to its PID (it stops what
    it started), SIGKILL if it takes more than 10 s. On failure the log is
    printed (pytest shows it with the failure)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(script)], env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"--- {log}\n{log.read_text(errors='replace')}")


class Http:
    """A JSON HTTP client that keeps cookies, like a browser tab."""

    def __init__(self, base: str, headers: dict = None):
        self.base = base
        self.headers = headers or {}
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method: str, path: str, body=None):
        """(status, JSON or text) of one request."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=5) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

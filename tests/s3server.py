"""moto's S3 server for the tests, started like the embedded engines (``services/embedded.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from services.embedded import free_port, terminate, wait_until


class MotoS3:
    """moto's S3 server over HTTP on loopback; the credentials are moto's dummies."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self.endpoint_url = ""

    def start(self) -> str:
        port = free_port()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1), "moto server")
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            os.environ.setdefault(name, value)
        return self.endpoint_url

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None

"""Headless Chromium (Debian's package) driven over the DevTools protocol on a pipe, for tests that look
at a page as a browser shows it.

Why not ``chromium --headless --dump-dom --virtual-time-budget``: the admin page needs credentials in a
header, and with the credentials of a URL (``http://user:token@host/``) Chromium ends the virtual-time
budget at the authentication round trip, before any timer of the page has run. Over the protocol the
test sends the header itself and waits for a condition in the page (its refresh counter), not for a
guessed amount of time.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

BINARY = "chromium"


def require_chromium() -> str:
    path = shutil.which(BINARY)
    if path is None:
        message = "chromium is not installed: apt-get install -y chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Chromium:
    """One headless browser with one page. Commands go through fd 3 and replies come back on fd 4,
    NUL-separated JSON (``--remote-debugging-pipe``): no port, no websocket."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        binary = require_chromium()
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="tenantpool-chromium-")
        self._log = open(Path(self._profile) / "chromium.log", "wb")

        def child_fds() -> None:
            # dup first: dup2 onto the same number would keep the close-on-exec flag os.pipe() sets.
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.page("Page.enable")
        self.page("Network.enable")
        self.page("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
        })  # fmt: skip

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:  # events and other replies are not needed here
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.send(method, params, self._session)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited ({self.proc.poll()}); its log: {self._log.name}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
        """Navigates and waits for the load event's end (``document.readyState == "complete"``)."""
        self.page("Network.setExtraHTTPHeaders", {"headers": headers or {}})
        reply = self.page("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {reply['errorText']}")
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout)

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Polls a JavaScript condition in the page until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting in the page for: {expression}")
            time.sleep(0.05)

    def dom(self) -> str:
        """The live DOM, as ``--dump-dom`` prints it."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> Path:
        data = self.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
        finally:
            os.close(self._to_chrome)
            os.close(self._from_chrome)
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

"""A real browser for tests: Debian's headless ``chromium`` driven over the DevTools protocol.

The Marquez web UI draws its lineage graph after fetching ``/api/v1/lineage`` and laying it
out in a web worker (ELK), which ``chromium --dump-dom`` with a virtual-time budget never
waits for. Over the DevTools protocol (``websocket-client``) a test instead polls the rendered
page until it shows what it expects, then takes the screenshot of what it saw::

    with Chromium.launch(profile_dir) as browser:
        browser.open(url)
        text = browser.wait_for_text(lambda text: "main/tables/dm" in text, timeout=60)
        browser.screenshot(Path("docs/img/lineage.png"))
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in CI: Chromium's sandbox refuses to run as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",  # a free port, written to <profile>/DevToolsActivePort
    "--remote-allow-origins=*",
)


class BrowserError(Exception):
    """Chromium is missing, did not start, or the page never showed what was awaited."""


class Chromium:
    """One headless Chromium process and a DevTools connection to its page."""

    def __init__(self, process: subprocess.Popen[bytes], socket: websocket.WebSocket) -> None:
        self.process = process
        self.socket = socket
        self._ids = itertools.count(1)

    @classmethod
    def launch(
        cls, profile: Path, width: int = 1600, height: int = 900, timeout: float = 60.0
    ) -> Chromium:
        """Start ``chromium`` with its own profile dir and connect to its first page."""
        binary = shutil.which("chromium")
        if binary is None:
            raise BrowserError("Debian's chromium is not installed: apt-get install -y chromium")
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        process = subprocess.Popen(  # noqa: S603
            [binary, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"]
            + ["about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=(profile / "chromium.log").open("ab"),
        )
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise BrowserError(f"chromium did not start; log: {profile / 'chromium.log'}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as answer:  # noqa: S310
            targets = json.loads(answer.read())
        page = next(t for t in targets if t["type"] == "page")
        return cls(process, websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30))

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its ``result`` (events in between are ignored)."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") != ident:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    def open(self, url: str) -> None:
        """Navigate the page to ``url``."""
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The rendered page's text, as a reader sees it (``document.body.innerText``)."""
        answer = self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return str(answer["result"].get("value", ""))

    def wait_for_text(self, ready: Callable[[str], bool], timeout: float) -> str:
        """Poll the page's text until ``ready(text)``; the text, or BrowserError with it."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if ready(text):
                return text
            time.sleep(0.25)
        raise BrowserError(f"the page never showed what was awaited; it shows:\n{text[-3000:]}")

    def screenshot(self, path: Path) -> None:
        """Save what the page shows now as a PNG."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

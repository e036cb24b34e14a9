"""A real headless Chromium (Debian's ``chromium``) for checking what a user reads on a page, offline.

``--dump-dom`` alone cannot answer the questions the browser tests ask: the text a user sees
(``innerText``, which leaves out what CSS hides and shows a ``<pre>`` as typed), an image's decoded width
against the width it is drawn at, whether the page scrolls sideways, and which requests the page tried.
So the browser is driven over the DevTools protocol, with the ``websockets`` package the service's
dependencies already bring (a dozen commands, no browser-automation library).

Nothing but 127.0.0.1 is reachable: every other request goes to a proxy on a closed loopback port and
every host name but 127.0.0.1 resolves to nothing, so an asset loaded from a CDN fails here as it would on
a machine without internet, and the request is still recorded (:attr:`Page.requests`) for the test to
name. Chromium runs in its own process group and is stopped with all its helpers when the ``with`` ends.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from tests.e2e.support import kill_processes

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "scripts" / "install-chromium.sh"
LOCAL_SCHEMES = {"data", "blob", "file", "about"}
"""Schemes that never leave the machine; everything else must be http(s)://127.0.0.1."""
BLACKHOLE_PROXY = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a proxied request fails at once."""


class BrowserError(RuntimeError):
    """Chromium could not be installed, started or driven."""


def ensure_chromium() -> str:
    """The path of ``chromium``; scripts/install-chromium.sh installs it when missing (apt-get, as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    done = subprocess.run(
        ["bash", str(INSTALLER)], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900
    )
    found = shutil.which("chromium")
    if done.returncode != 0 or not found:
        raise BrowserError(
            f"chromium is not installed and {INSTALLER.name} could not install it "
            f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return found


def leaves_machine(url: str) -> bool:
    """Whether a request for ``url`` would go anywhere but this machine's loopback."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return parts.hostname != "127.0.0.1"


class Page:
    """One tab: navigate, evaluate JavaScript, take a screenshot; records every request it made."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self._browser = browser
        self.target = target
        self._session = session
        self.requests: list[str] = []
        self.failures: dict[str, str] = {}  # url -> Chromium's error (net::ERR_...) for requests that failed
        self._ids: dict[str, str] = {}

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        return self._browser.send(method, params, session=self._session, timeout=timeout)

    def _record(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.requests.append(url)
            self._ids[params["requestId"]] = url
        elif event.get("method") == "Network.loadingFailed":
            url = self._ids.get(params.get("requestId", ""), "?")
            self.failures[url] = str(params.get("errorText", ""))

    def open(self, url: str, ready: str, timeout: float = 30.0) -> None:
        """Go to ``url`` and wait until the JavaScript expression ``ready`` is true (scripts have run).

        Raises BrowserError with what the page shows and which requests failed when it never is.
        """
        navigated = self.send("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")
        if not self.wait_until(f"document.readyState === 'complete' && Boolean({ready})", timeout):
            raise BrowserError(
                f"{url}: `{ready}` still false after {timeout:.0f}s; the page reads {self.text()[:500]!r}; "
                f"failed requests: {self.failures or 'none'}"
            )

    def wait_until(self, expression: str, timeout: float) -> bool:
        """Poll a JavaScript expression until it is true (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.evaluate(f"Boolean({expression})"):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def text(self) -> str:
        """What a reader sees: the body's rendered text (hidden elements left out, as laid out)."""
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable results only)."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def dom(self) -> str:
        """The document after its scripts ran (what ``--dump-dom`` prints)."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page as drawn (the whole page, not only the window, unless ``full_page`` is false)."""
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def offsite_requests(self) -> list[str]:
        """Requests that tried to leave 127.0.0.1 (each failed: nothing else is reachable)."""
        self._browser.drain()
        return [url for url in self.requests if leaves_machine(url)]

    def close(self) -> None:
        self._browser.send("Target.closeTarget", {"targetId": self.target})
        self._browser._pages.pop(self._session, None)


class Browser:
    """Headless Chromium with a fresh profile in ``profile``; use as a context manager."""

    def __init__(
        self, profile: Path, width: int = 1280, height: int = 900, binary: str | None = None
    ) -> None:
        self.profile = profile
        self.size = (width, height)
        self.binary = binary or ensure_chromium()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: Any = None
        self._next_id = 0
        self._pages: dict[str, Page] = {}

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        log = open(self.profile / "chromium.log", "wb")
        width, height = self.size
        try:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "--headless=new",
                    "--no-sandbox",  # root in CI containers; the pages are our own
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--hide-scrollbars",
                    "--remote-debugging-port=0",
                    f"--user-data-dir={self.profile}",
                    f"--window-size={width},{height}",
                    f"--proxy-server={BLACKHOLE_PROXY}",
                    "--proxy-bypass-list=127.0.0.1",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, timeout: float = 60.0) -> None:
        from websockets.sync.client import connect

        active = self.profile / "DevToolsActivePort"  # Chromium writes its port and path here once it listens
        deadline = time.monotonic() + timeout
        while not active.exists() or len(active.read_text().split()) < 2:
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError(
                    f"chromium did not start (exit {self._proc.returncode}); its log ends with:\n"
                    + (self.profile / "chromium.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)
        port, path = active.read_text().split()[:2]
        self._ws = connect(f"ws://127.0.0.1:{port}{path}", proxy=None, max_size=None, open_timeout=30)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """One DevTools command and its result; events that arrive meanwhile go to their page."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {method} within {timeout:.0f}s")
            reply = json.loads(self._ws.recv(timeout=left))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self._dispatch(reply)

    def drain(self, quiet_s: float = 0.3) -> None:
        """Take in the events already sent (requests a page made since the last command)."""
        while True:
            try:
                self._dispatch(json.loads(self._ws.recv(timeout=quiet_s)))
            except TimeoutError:
                return

    def _dispatch(self, event: dict[str, Any]) -> None:
        page = self._pages.get(event.get("sessionId", ""))
        if page is not None:
            page._record(event)

    def new_page(self) -> Page:
        """A fresh tab with network recording on and the window's size as its viewport."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        self._pages[session] = page
        page.send("Network.enable")
        page.send("Page.enable")
        page.send("Runtime.enable")
        return page

    def close(self) -> None:
        """Close the browser, then make sure no process of its group (renderers, zygotes) outlives it."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self.send("Browser.close", timeout=5)
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        family = [p for p in psutil.process_iter() if _in_group(p, proc.pid)]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        kill_processes(family, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _in_group(proc: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(proc.pid) == group
    except (ProcessLookupError, PermissionError, psutil.Error):
        return False

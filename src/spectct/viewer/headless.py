"""Drive a headless Chromium over the DevTools protocol, for the viewer's tests, benchmarks and screenshots.

Chromium's ``--remote-debugging-pipe`` speaks the DevTools protocol as JSON messages separated by NUL
bytes on file descriptors 3 (commands in) and 4 (replies and events out), so neither a websocket client
nor a browser-automation package is needed. WebGL2 runs on SwiftShader (software), which is what NiiVue
needs on a machine without a GPU.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless Chromium with one page, controlled through DevTools commands.

    Parameters
    ----------
    profile_dir : a fresh folder for the browser profile (``--user-data-dir``).
    executable : Chromium binary; default :func:`find_chromium`.
    width, height : window size in CSS pixels.

    Examples
    --------
    >>> b = HeadlessChromium(tmp / "profile")                       # doctest: +SKIP
    >>> b.goto("http://127.0.0.1:8765/"); b.wait_for("window.spectctViewer.state.ready")  # doctest: +SKIP
    >>> b.screenshot(tmp / "page.png"); b.close()                   # doctest: +SKIP
    """

    def __init__(self, profile_dir: str | os.PathLike, executable: str | None = None, width: int = 1500,
                 height: int = 900):
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no Chromium on PATH (apt-get install chromium)")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-pipe",
                f"--window-size={width},{height}", "about:blank"]
        # bash puts our pipe ends on the fds 3 and 4 Chromium expects, then becomes Chromium (exec)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', executable, *args],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self._closed = False
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    # ---------------------------------------------------------------- protocol
    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe during {method}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page(self, method: str, **params) -> dict:
        """A command for the page (its DevTools session)."""
        return self.call(method, session=self.session, **params)

    # ---------------------------------------------------------------- page helpers
    def goto(self, url: str) -> None:
        self.page("Page.navigate", url=url)

    def js(self, expression: str):
        """Evaluate ``expression`` in the page (promises awaited) and return its JSON value."""
        res = self.page("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            detail = res["exceptionDetails"].get("exception", {}).get("description") or res["exceptionDetails"]
            raise RuntimeError(f"{expression}: {detail}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0, poll_s: float = 0.1):
        """Poll ``expression`` until it is truthy; return its value or raise TimeoutError."""
        end = time.monotonic() + timeout_s
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"waited {timeout_s} s for {expression}")
            time.sleep(poll_s)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first element matching ``selector``."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                      " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if box is None:
            raise LookupError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: str | os.PathLike) -> Path:
        """Write the visible page as PNG."""
        path = Path(path)
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        """Close the browser (and kill it if it does not exit within 10 s)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

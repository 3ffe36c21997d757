"""Take docs/app.png: a screenshot of the app's page once a prediction is on it.

    streamlit run app.py --server.headless true --server.port 8501 &
    python docs/app_screenshot.py http://localhost:8501 docs/app.png

A Streamlit page is built by the browser from messages the server sends while the script runs,
so a plain `chromium --headless --screenshot URL` photographs an empty page: it shoots when the
HTML has loaded, seconds before the prediction arrives (`--virtual-time-budget` does not help,
the server's work takes real time). This script drives headless Chromium (Debian's `chromium`
package) over the DevTools protocol instead: it opens the page, waits until the page's text
shows `--wait-for` (the download button that ends a prediction) and its pictures have loaded,
then captures it. It needs `websockets`, which the app's requirements install with Streamlit.
"""
from __future__ import annotations

import argparse
import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

DONE = """(() => { const text = document.body.innerText;
  return text.includes(%s) && !text.includes("Running...") &&
         [...document.images].every(image => image.complete && image.naturalWidth > 0); })()"""


def devtools(port: int, timeout: float) -> str:
    """The websocket address of a new page in the Chromium listening on `port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank",
                                             method="PUT")
            with urllib.request.urlopen(request, timeout=2) as reply:
                return json.load(reply)["webSocketDebuggerUrl"]
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Chromium DevTools on port {port} after {timeout:g} s")
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the running app, e.g. http://localhost:8501")
    parser.add_argument("out", type=Path, help="the PNG to write, e.g. docs/app.png")
    parser.add_argument("--size", default="1400,1330", help="window width,height in pixels")
    parser.add_argument("--wait-for", default="prediction.json", help="text that ends the wait")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait at most")
    parser.add_argument("--port", type=int, default=9333, help="Chromium's DevTools port")
    parser.add_argument("--chromium", default="chromium", help="the browser to run")
    args = parser.parse_args(argv)
    width, height = (int(x) for x in args.size.split(","))
    with tempfile.TemporaryDirectory(prefix="facet-chromium-") as profile:
        browser = subprocess.Popen(
            [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={args.port}", f"--user-data-dir={profile}",
             f"--window-size={width},{height}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with connect(devtools(args.port, 30), max_size=2**28) as page:
                calls = iter(range(1, 10**9))

                def call(method: str, **params) -> dict:
                    number = next(calls)
                    page.send(json.dumps({"id": number, "method": method, "params": params}))
                    while True:  # skip the events in between
                        message = json.loads(page.recv())
                        if message.get("id") == number:
                            return message.get("result", {})

                call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                     deviceScaleFactor=1, mobile=False)
                call("Page.navigate", url=args.url)
                deadline = time.monotonic() + args.timeout
                done = DONE % json.dumps(args.wait_for)
                while not call("Runtime.evaluate", expression=done,
                               returnByValue=True)["result"].get("value"):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{args.url}: no {args.wait_for!r} on the page after "
                                           f"{args.timeout:g} s")
                    time.sleep(1)
                time.sleep(2)  # the last layout and fonts
                shot = call("Page.captureScreenshot", format="png")["data"]
        finally:
            browser.terminate()
            browser.wait(timeout=30)
    args.out.write_bytes(base64.b64decode(shot))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

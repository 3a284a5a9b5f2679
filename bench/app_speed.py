"""The dashboard on the CPU: first paint of a fresh server, and re-rendering a stored grid.

* first paint: a fresh ``streamlit run app.py``; the time from the browser asking for ``/`` to
  the Stitching page's title being drawn (Debian's Chromium via Playwright).
* stored run: with an Instant grid in the store, the time to open its URL until the heatmap's
  cells are drawn (warm server), and the server-side script time of that rerun (AppTest).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PAIR = "sender=zoo/resnet_1111-s0&receiver=zoo/resnet_2222-s0"


def _serve(env, port):
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("streamlit did not start")


def main(argv=None) -> dict:
    from playwright.sync_api import sync_playwright
    from streamlit.testing.v1 import AppTest

    from core.engine.grid import run_grid
    from core.runs.recipes import grid_config
    from core.runs.store import Store

    from ._util import emit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="stitchlab-bench-"))
    env = {**os.environ, "STITCHLAB_HOME": str(home), "STITCHLAB_DB": str(home / "bench.sqlite3")}
    os.environ.update({k: env[k] for k in ("STITCHLAB_HOME", "STITCHLAB_DB")})
    run_grid(grid_config("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", "instant", "quick"),
             store=Store(env["STITCHLAB_DB"]), device="cpu")
    first_paint, stored = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        for _ in range(args.repeats):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proc = _serve(env, port)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1200})
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_text("Model stitching").first.wait_for(timeout=60_000)
                first_paint.append(time.perf_counter() - start)
                page.locator(".js-plotly-plot .point").first.wait_for(timeout=120_000)  # warm it up
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/?{PAIR}&metric=penalty")
                page.locator(".js-plotly-plot .point").first.wait_for(timeout=60_000)
                stored.append(time.perf_counter() - start)
                page.close()
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
        browser.close()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    script = []
    for metric in ["penalty", "relative", "accuracy"] * args.repeats:
        start = time.perf_counter()
        at.radio(key="metric").set_value(metric).run()
        script.append(time.perf_counter() - start)
    return emit("app_speed", torch.device("cpu"), first_paint_s=[round(t, 3) for t in first_paint],
                stored_run_page_load_s=[round(t, 3) for t in stored],
                stored_run_script_rerun_s=round(sorted(script)[len(script) // 2], 3),
                note="first paint: fresh server, '/' until the title is drawn; stored run: warm server, "
                     "URL of a stored 5x9 grid until its cells are drawn; script rerun: median AppTest rerun")


if __name__ == "__main__":
    main()

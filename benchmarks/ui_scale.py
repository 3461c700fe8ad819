"""How MLflow's UI copes with a large study: seconds until each page shows its data.

    python benchmarks/ui_scale.py OUTPUTS_DIR [--compare 100 1000] [--shots DIR]

Needs `pip install playwright` and Debian's chromium (`apt-get install -y chromium`; no browser
download). Starts `mlflow ui` on OUTPUTS_DIR/mlflow.db as a user would, opens in a headless
chromium: the experiment's run list (the study's parent row), the parent expanded to its
children, the run list's chart view, the parent's own page, and the compare view of the first
N trials; prints the seconds from navigation until the page shows the text that means its
data arrived (a page still loading at 300 s prints "> 300 s"), and saves a screenshot of each.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

LIMIT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(page, shots: Path, name: str, go, text: str) -> None:
    t = time.perf_counter()
    go()
    try:
        page.wait_for_selector(f"text={text}", timeout=LIMIT_S * 1000)
        took = f"{time.perf_counter() - t:.1f} s"
    except Exception:
        took = f"> {LIMIT_S} s"
    page.wait_for_timeout(1500)  # let the rest of the page paint before the picture
    page.screenshot(path=str(shots / f"{name}.png"))
    print(f"{name:40s} {took}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outputs", type=Path)
    p.add_argument("--compare", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--shots", type=Path, default=Path("ui-scale-shots"))
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    db = (a.outputs / "mlflow.db").resolve()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        parent, exp, parent_name = c.execute(
            "SELECT r.run_uuid, r.experiment_id, r.name FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'bpexp.role' AND t.value = 'study' ORDER BY r.start_time DESC LIMIT 1").fetchone()
        children = [r for r, in c.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? ORDER BY r.name", (parent,))]
    print(f"{len(children)} trials under parent {parent_name} ({parent})")
    a.shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(["mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}/#"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            fresh = lambda: browser.new_page(viewport={"width": 1600, "height": 1000})  # noqa: E731  (no cache)
            runs = f"{base}/experiments/{exp}?workflowType=machine_learning"
            page = fresh()
            timed(page, a.shots, "1 run list (the parent row)", lambda: page.goto(runs), parent_name)
            expander = page.locator("[role=row][row-index='0'] button[data-component-id*='runnamecellrenderer']")
            last = f"t{len(children) - 1:0{max(3, len(str(len(children) - 1)))}d}"  # the newest child, listed first
            timed(page, a.shots, "2 the parent expanded", lambda: expander.first.click(timeout=30000), last)
            chart = page.locator("label:has(input[name=runs-view-mode][value=CHART])")
            timed(page, a.shots, "3 the run list's chart view", lambda: chart.first.click(timeout=30000), "best_value")
            page.close()
            page = fresh()
            timed(page, a.shots, "4 the parent's page",
                  lambda: page.goto(f"{base}/experiments/{exp}/runs/{parent}?workflowType=machine_learning"),
                  "recommended")
            page.close()
            for n in a.compare:
                ids = children[:n]
                url = f"{base}/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([str(exp)])}"
                page = fresh()
                timed(page, a.shots, f"5 compare {len(ids)} trials", lambda: page.goto(url), f"Comparing {len(ids)} Runs")
                page.close()
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()

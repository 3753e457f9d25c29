"""report.html opened in headless Chromium: no JavaScript errors, every plotly div drew SVG, a screenshot.

The study's class labels and a column name are HTML that would run (and record an error) if the report did not
escape them. Skipped only when chromium is missing outside CI; in CI (env CI set) a missing chromium fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.report_helpers import OPTUNA_FIGS, hostile_csv, invoke, write_spec

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000"]
# Runs before the page's own scripts: records errors, then writes what it saw into the DOM after load.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push('error: ' + e.message); });
window.addEventListener('unhandledrejection', function (e) { window.__errors.push('rejection: ' + e.reason); });
var __ce = console.error; console.error = function () {
  window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  __ce.apply(console, arguments); };
window.addEventListener('load', function () { setTimeout(function () {
  var plots = {}; document.querySelectorAll('.js-plotly-plot').forEach(function (d) {
    plots[d.id] = d.querySelectorAll('svg.main-svg').length; });
  var pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({errors: window.__errors, plots: plots}); document.body.appendChild(pre);
}, 1000); });
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile each run
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=180)


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("browser")
    csv = hostile_csv(folder / "hostile.csv")
    spec = {"data": {"path": str(csv), "target": "label"},
            "space": {"depth": [1, 2], "width": [4, 16], "lr": {"low": 3e-3, "high": 3e-2, "log": True},
                      "max_epochs": 15},
            "training": {"threads": 1, "early_stopping": {"patience": 5}},
            "study": {"name": "hostile", "n_trials": 5, "seed": 0}, "report": {"seeds": 2, "rescore_top": 2,
                                                                              "folds": 2}}
    res = invoke("search", str(write_spec(folder / "hostile.yaml", spec)), "-q", "--no-export", cwd=folder)
    assert res.exit_code == 0, res.output
    return folder / "studies" / "hostile" / "report.html"


def test_user_strings_are_escaped(hostile_report):
    page = hostile_report.read_text()
    assert "<img src=x" not in page and "<b>col</b>" not in page and "a & b <i>" not in page
    assert "&lt;img src=x onerror=" in page and "a &amp; b &lt;i&gt;" in page


def test_chromium_loads_the_report_without_errors_and_draws_every_plot(hostile_report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(hostile_report.read_text().replace("<head>", "<head>" + PROBE, 1))
    proc = chromium("--dump-dom", probed.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the page did not finish loading: " + proc.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    uncaught = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert probe["errors"] == [] and uncaught == []
    plots = probe["plots"]
    assert set(plots) >= {"learning-curves", "capacity-gap", "confusion-matrix", "roc-curve", *OPTUNA_FIGS}
    assert all(n > 0 for n in plots.values()), plots  # every plotly div holds SVG


def test_chromium_screenshot(hostile_report, tmp_path):
    shot = tmp_path / "report.png"
    proc = chromium("--window-size=1280,2400", "--hide-scrollbars", f"--screenshot={shot}", hostile_report.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a blank page compresses to a few kB
    keep = os.environ.get("AUTOMLP_SCREENSHOTS")  # set it to look at the picture
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")

"""The report as a browser sees it: rendered by headless Chromium, every plot must decode."""

import json
import re
import shutil
import subprocess

import pytest

from tunewise.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]
# Appended to a copy of the report: after load, write each image's decoded width into the DOM.
PROBE = ("<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='probe';"
         "p.textContent=JSON.stringify([...document.images].map(i=>[i.id||i.className,i.naturalWidth]));"
         "document.body.appendChild(p);});</script>")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def chromium(tmp_path, *args) -> str:
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                         check=False, capture_output=True, text=True, timeout=120)  # the probe checks
    return out.stdout


@pytest.mark.parametrize("task", ["classification", "generation"])
def test_every_plot_is_drawn(tiny_runs, tmp_path, task):
    html = write_report(tiny_runs[task][0].run_dir).read_text()
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the page did not finish loading in Chromium"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    expected = 6 if task == "classification" else 4  # two confusion matrices only for classification
    assert len(images) == expected
    assert all(width > 100 for _, width in images), images


def test_screenshot(tiny_runs, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--hide-scrollbars", "--window-size=1200,2000", f"--screenshot={shot}",
             write_report(tiny_runs["classification"][0].run_dir).as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

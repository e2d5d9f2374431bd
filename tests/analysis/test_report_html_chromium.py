"""report.html in a real browser (headless Chromium, Debian's package): every image loads and
nothing is wider than the page, for the committed CPU study's report (wide tables, three-panel
figures) and a fabricated quickstart report, at a desktop and a narrow window.

Chromium is installed with apt-get when missing and the test runs as root; otherwise the test is
skipped with the reason."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from analysis import report
from helpers.fakeruns import make_grid

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# Written into the page on load: how many images, how many failed, and what sticks out on the right.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images], w = document.documentElement.clientWidth;
  const wide = [...document.body.querySelectorAll("*")]
      .filter(e => e.getBoundingClientRect().right > w + 1).map(e => e.tagName);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: imgs.length,
      broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
      scroll: document.documentElement.scrollWidth, width: w, wide: wide.slice(0, 8)});
  document.body.appendChild(out);
});</script>"""


def chromium() -> str:
  found = shutil.which("chromium") or shutil.which("chromium-browser")
  if found:
    return found
  if os.geteuid() != 0 or not shutil.which("apt-get"):
    pytest.skip("chromium is not installed and the test is not root (apt-get install chromium)")
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
      pytest.skip(f"chromium could not be installed ({' '.join(cmd)}: {r.stderr.strip()[-300:]})")
  return shutil.which("chromium") or pytest.skip("apt-get installed no chromium binary")


def probe(page: pathlib.Path, tmp_path: pathlib.Path, width: int) -> dict:
  """Opens a copy of `page` with PROBE added and returns what PROBE wrote."""
  copy = tmp_path / f"probe-{width}.html"
  copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
  profile = tmp_path / f"profile-{width}"
  r = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}",
                      f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
                      copy.as_uri()], capture_output=True, text=True, timeout=180)
  m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
  assert m, f"chromium wrote no probe (rc {r.returncode}): {r.stderr[-800:]}"
  return json.loads(m.group(1).replace("&quot;", '"'))


def _check(page: pathlib.Path, tmp_path: pathlib.Path, n_images: int) -> None:
  for width in (1280, 700):
    got = probe(page, tmp_path, width)
    assert got["images"] == n_images and got["broken"] == 0, got
    assert got["scroll"] <= got["width"] and not got["wide"], got


@pytest.mark.slow
def test_committed_study_report_html_loads_every_image_and_fits_the_page(tmp_path):
  page = ROOT / "docs" / "cpu_study" / "report.html"
  n = len(re.findall(r"^!\[", (ROOT / "docs" / "cpu_study" / "report.md").read_text(), re.M))
  _check(page, tmp_path, n)


@pytest.mark.slow
def test_quickstart_report_html_loads_every_image_and_fits_the_page(tmp_path):
  make_grid(tmp_path / "runs", sizes=(1e5, 3e5), budgets=(1e6,), epochs=(1, 64), n_eval=16,
            unigram_entropy=3.1)
  out = tmp_path / "out"
  assert report.main([f"--runs={tmp_path / 'runs'}", f"--out={out}", "--n_boot=0",
                      "--grid=coarse"]) == 0
  n = len(re.findall(r"^!\[", (out / "report.md").read_text(), re.M))
  _check(out / "report.html", tmp_path, n)

"""The README's main job, for real: the quickstart grid on both cores, cold data cache, then its
report. It must tell the study's story (each family past its best inside the grid, the curves
figure first with both bests starred) and say once per law, never per family, what it cannot fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env


@pytest.mark.slow
def test_main_job_tells_the_story_and_its_report_links_only_files_it_wrote(tmp_path):
  runs = tmp_path / "runs"
  proc = subprocess.run([sys.executable, "-m", "launch.local", "--config=configs/quickstart.py",
                         f"--workdir={runs}", "--parallel=2"], cwd=REPO, capture_output=True, text=True,
                        env=subprocess_env(DLMSCALE_CACHE=str(tmp_path / "cache")), timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = runs / "report"
  md = (out / "report.md").read_text()
  links = re.findall(r"\]\(([^)\s]+)\)", md)
  assert links[0] == "figures/loss_vs_epochs.png"
  assert all((out / link).is_file() for link in links), links
  lines = md.splitlines()
  laws = [l.split(":")[0] for l in lines if "not identifiable" in l]
  assert len(laws) == len(set(laws)), laws  # at most one line per law
  assert not [l for l in lines if "not identifiable" in l and re.match(r"- (AR|MDM)\b", l)]
  fits = json.loads((out / "fits.json").read_text())
  (best,) = fits["answer"]["bests"]
  for fam in ("ar", "mdm"):
    x = best["families"][fam]
    assert x["annealed"] and not x["still_improving"], x  # longer branches ended higher: past its best
  assert best["gap"]["ci"] is not None
  caption = next(l for l in lines if l.startswith("**Figure 1.**"))
  assert "AR − MDM" in caption and "95% CI" in caption and "unigram floor" in caption
  assert (out / "report.html").read_text().count('src="data:image/png;base64,') == len(links)

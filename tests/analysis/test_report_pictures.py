"""The report leads with pictures: the curves figure (every evaluation of every run, each family's
best starred, the unigram floor drawn) with the gap at the bests in its caption, then loss vs
compute, then at most five lines of answer. A law this grid cannot fit is one line naming the grid
that fits it, never a line per family. report.html is report.md on one page, figures inline, and
--redraw rewrites a report from its own fits.json without changing a number."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pandas as pd

from analysis import report
from analysis.render import curves, html, plots
from helpers.fakeruns import make_grid

FLOOR = 3.1
N_EVAL = 16


def _quickstart(tmp_path: pathlib.Path, **kw) -> tuple[pathlib.Path, str]:
  """The quickstart's shape: 2 sizes, one budget, long runs (curves) beside 1-epoch runs."""
  make_grid(tmp_path / "runs", sizes=(1e5, 3e5), budgets=(1e6,), epochs=(1, 64), n_eval=N_EVAL, **kw)
  out = tmp_path / "out"
  assert report.main([f"--runs={tmp_path / 'runs'}", f"--out={out}", "--n_boot=0",
                      "--grid=coarse"]) == 0
  return out, (out / "report.md").read_text()


def _section(md: str, head: str) -> list[str]:
  lines = md.split("\n## ")
  [sec] = [s for s in lines if s.startswith(head)]
  return [l for l in sec.splitlines()[1:] if l.strip()]


def test_quickstart_report_leads_with_pictures_and_one_line_per_law(tmp_path):
  out, md = _quickstart(tmp_path, unigram_entropy=FLOOR)
  links = re.findall(r"\]\(([^)\s]+)\)", md)
  assert links[:2] == ["figures/loss_vs_epochs.png", "figures/loss_vs_flops.png"]
  for link in links:
    assert (out / link).is_file(), f"report.md links {link}, which was never written"
  lines = md.splitlines()
  first = lines.index("![loss vs epochs](figures/loss_vs_epochs.png)")
  caption = [l for l in lines[:first] if l.startswith("**Figure 1.**")]
  assert caption and f"unigram floor, {FLOOR:.3f} nats/token" in caption[0]
  assert "AR − MDM =" in caption[0] and "95% CI" in caption[0]
  assert md.index("loss_vs_flops.png") < md.index("## The answer") < md.index("## Grid")
  assert len(_section(md, "The answer")) <= 5
  laws = [l.split(":")[0] for l in lines if "not identifiable" in l]
  assert laws and len(laws) == len(set(laws)), laws  # at most one line per law
  assert not [l for l in lines if "not identifiable" in l and re.match(r"- (AR|MDM)\b", l)]
  assert "`configs/isoflop.py`" in md and "`configs/datacons.py`" in md  # the grids that fit them
  floor = json.loads((out / "fits.json").read_text())["answer"]["unigram_floor"]
  assert floor["value"] == FLOOR and floor["n_runs"] == 8
  page = (out / "report.html").read_text()
  assert page.count('src="data:image/png;base64,') == len(links) and "figures/" not in page


def _drawn(monkeypatch) -> list:
  figs = []
  save = plots._save

  def spy(fig, out, name):
    figs.append(fig)
    return save(fig, out, name)

  monkeypatch.setattr(plots, "_save", spy)
  return figs


def test_the_curves_figure_draws_every_evaluation_the_bests_and_the_floor(tmp_path, monkeypatch):
  figs = _drawn(monkeypatch)
  _quickstart(tmp_path, unigram_entropy=FLOOR)
  [fig] = [f for f in figs if f.axes[0].get_xlabel() == "epochs"]
  lines = fig.axes[0].get_lines()
  along = [l for l in lines if len(l.get_xdata()) == N_EVAL]
  assert len(along) == 8  # every run: 2 families x 2 sizes x (1-epoch + long)
  stars = [l for l in lines if l.get_marker() == "*" and len(l.get_xdata()) == 1]
  assert len(stars) == 2  # one best per family
  assert [l for l in lines if list(l.get_ydata()) == [FLOOR, FLOOR]]


def test_runs_without_the_record_draw_no_floor_and_say_why_once(tmp_path, monkeypatch):
  figs = _drawn(monkeypatch)
  _, md = _quickstart(tmp_path)
  [fig] = [f for f in figs if f.axes[0].get_xlabel() == "epochs"]
  assert not [l for l in fig.axes[0].get_lines() if len(set(l.get_ydata())) == 1
              and len(l.get_xdata()) == 2 and l.get_linestyle() == ":"]
  why = [l for l in md.splitlines() if "No unigram floor is drawn" in l]
  assert len(why) == 1 and "predate" in why[0]


def test_end_points_are_drawn_where_the_tables_hold_no_curve(tmp_path, monkeypatch):
  figs = _drawn(monkeypatch)
  pts = pd.DataFrame(dict(objective=["ar", "mdm"], unique_tokens=[1e6, 1e6], model_size=["a", "a"],
                          N=[1e5, 1e5], epochs=[4.0, 16.0], loss=[3.5, 3.6], se=[0.01, 0.01],
                          runs=["r1", "r2"]))
  empty = pd.DataFrame(columns=["run_name", "objective", "model_size", "unique_tokens", "epoch",
                                "loss"])
  assert curves.loss_vs_epochs(pts, empty, {}, tmp_path)
  drawn = [np.asarray(l.get_xdata(), float).tolist() for l in figs[0].axes[0].get_lines()]
  assert [4.0] in drawn and [16.0] in drawn


def test_redraw_keeps_every_number(tmp_path):
  out, md = _quickstart(tmp_path, unigram_entropy=FLOOR)
  again = tmp_path / "again"
  for name in ("fits.json", "points.csv", "runs.csv", "curves.csv"):
    again.mkdir(exist_ok=True)
    (again / name).write_bytes((out / name).read_bytes())
  assert report.main([f"--redraw={again}", f"--out={again}"]) == 0
  assert (again / "report.md").read_text() == md
  assert (again / "figures" / "loss_vs_epochs.png").is_file() and (again / "report.html").is_file()


def test_redraw_takes_a_floor_computed_after_the_runs(tmp_path):
  out, md = _quickstart(tmp_path)  # runs from before the record
  assert "No unigram floor is drawn" in md
  (out / "unigram_floor.json").write_text(json.dumps(dict(value=2.5, note="computed afterwards")))
  assert report.main([f"--redraw={out}", f"--out={out}"]) == 0
  again = (out / "report.md").read_text()
  assert "the unigram floor, 2.500 nats/token" in again and "computed afterwards" in again
  assert "No unigram floor" not in again


def test_html_converts_the_markdown_the_report_writes(tmp_path):
  (tmp_path / "figures").mkdir()
  (tmp_path / "figures" / "a.png").write_bytes(b"\x89PNG fake")
  md = "\n".join(["# Title", "", "**Figure 1.** R_D* and R_N* <b>", "", "![a](figures/a.png)", "",
                  "- one `code`", "  continued", "- two", "", "| x | y |", "|---|---|",
                  "| 1 | 2 |", "", "*Figure b not drawn: why.*", "", "![b](figures/b.png)"])
  page = html.render(md, tmp_path)
  assert "<h1>Title</h1>" in page and "<strong>Figure 1.</strong> R_D* and R_N* &lt;b&gt;" in page
  assert 'src="data:image/png;base64,iVBORyBmYWtl"' in page
  assert "<li>one <code>code</code> continued</li><li>two</li>" in page
  assert "<th>x</th><th>y</th>" in page and "<td>1</td><td>2</td>" in page and "---" not in page
  assert "<em>Figure b not drawn: why.</em>" in page and "figures/b.png is missing" in page

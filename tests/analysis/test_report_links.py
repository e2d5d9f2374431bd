"""Every report is whole: each link in report.md resolves to a file, a figure that could not be
drawn is named with the reason instead of linked, and every title, axis label and legend of every
figure lies inside its canvas, for a one-size grid (single panels, as the quickstart) and
multi-size, multi-budget grids (two panels; slow: the full grid with all six figures, three panels
a row)."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from analysis import report
from analysis.render import curves, plots
from helpers.fakeruns import make_grid

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _render(tmp_path: pathlib.Path, monkeypatch, **grid) -> tuple[pathlib.Path, str, dict[str, list[str]]]:
  """Writes the report of a fabricated grid; returns (out dir, report.md, texts cut per figure)."""
  cut: dict[str, list[str]] = {}
  save = plots._save

  def spy(fig, out, name):
    paths = save(fig, out, name)  # the real save (titles fitted, files written), then measure
    cut[name] = plots.text_outside_canvas(fig)
    return paths

  monkeypatch.setattr(plots, "_save", spy)
  make_grid(tmp_path / "runs", **grid)
  out = tmp_path / "out"
  assert report.main([f"--runs={tmp_path / 'runs'}", f"--out={out}", "--n_boot=0", "--grid=coarse"]) == 0
  return out, (out / "report.md").read_text(), cut


def _links(md: str) -> list[str]:
  return LINK.findall(md)


def test_one_size_grid_links_only_what_it_drew(tmp_path, monkeypatch):
  out, md, cut = _render(tmp_path, monkeypatch, sizes=(1e5,), budgets=(1e6,), epochs=(1, 4))
  links = _links(md)
  assert links, "the report links no figure at all"
  for link in links:
    assert (out / link).is_file(), f"report.md links {link}, which was never written"
  drawn = json.loads((out / "fits.json").read_text())["figures"]
  assert set(drawn) == {"loss_vs_flops", "loss_vs_epochs"}
  for name in ("loss_vs_size", "law_contours", "residuals", "c_crit"):
    assert f"figures/{name}.png" not in md
    [why] = [line for line in md.splitlines() if line.startswith(f"*Figure {name} not drawn: ")]
    assert why.endswith(f"{plots.NOT_DRAWN[name]}.*")
  assert set(cut) == set(drawn) and all(v == [] for v in cut.values()), cut


def test_two_size_grid_links_resolve_and_texts_fit(tmp_path, monkeypatch):
  out, md, cut = _render(tmp_path, monkeypatch, sizes=(1e5, 1e6), budgets=(1e6, 1e7), epochs=(1, 4))
  for link in _links(md):
    assert (out / link).is_file(), f"report.md links {link}, which was never written"
  assert "figures/loss_vs_size.png" in _links(md)  # two sizes: the model-wise view is drawn
  assert cut and all(v == [] for v in cut.values()), cut


@pytest.mark.slow
def test_full_grid_links_every_figure_and_texts_fit(tmp_path, monkeypatch):
  out, md, cut = _render(tmp_path, monkeypatch, sizes=(1e5, 1e6, 3e6), budgets=(1e6, 3e6, 1e7),
                         epochs=(1, 4, 16, 64))
  links = _links(md)
  for link in links:
    assert (out / link).is_file(), f"report.md links {link}, which was never written"
  assert {f"figures/{n}.png" for n in {**plots.NOT_DRAWN, **curves.NOT_DRAWN}} <= set(links)  # this grid supports every figure
  sweeps_drawn = {"dd_model", "dd_sample"}  # the grid's own series; no curve or order runs
  assert {f"figures/{n}.png" for n in sweeps_drawn} <= set(links)
  not_drawn = {l.split()[1] for l in md.splitlines() if "not drawn" in l}
  assert not_drawn == {"dd_curve"}, not_drawn  # (the orders section says in words it has no runs)
  every = set(plots.NOT_DRAWN) | set(curves.NOT_DRAWN)
  assert set(cut) == every | sweeps_drawn and all(v == [] for v in cut.values()), cut


def test_no_plots_links_no_figure(tmp_path):
  make_grid(tmp_path / "runs", sizes=(1e5, 1e6), budgets=(1e6,), epochs=(1, 4))
  out = tmp_path / "out"
  assert report.main([f"--runs={tmp_path / 'runs'}", f"--out={out}", "--n_boot=0", "--no_plots"]) == 0
  md = (out / "report.md").read_text()
  assert not [link for link in _links(md) if link.startswith("figures/")]
  assert "*Figure loss_vs_flops not drawn: figures were not drawn (--no_plots).*" in md


@pytest.mark.parametrize("n_panels", [1, 2, 3, 4])
def test_a_long_title_is_wrapped_inside_the_canvas_at_any_panel_count(n_panels):
  fig, axes = plots._panels(n_panels)
  for ax in axes:
    ax.plot([1, 2], [1, 2], label="a run")
    ax.set_title("U = 20K  (red ▼: double-descent peak, if any) and more words than fit")
    ax.legend(fontsize=6)
  fig.suptitle("Validation loss vs epochs per model size (solid AR, dashed MDM), a title longer than one panel")
  before = plots.text_outside_canvas(fig)
  plots.fit_titles(fig)
  assert plots.text_outside_canvas(fig) == []
  if n_panels == 1:
    assert before  # the case of issue 13: a single panel cut its suptitle at both edges
  plots.plt.close(fig)

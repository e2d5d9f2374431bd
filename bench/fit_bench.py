"""Wall time of the 4,500-start Chinchilla approach-3 fit on the Besiroglu data (target < 20 s).

  python bench/fit_bench.py [--repeats=3]

Prints one line per repeat (wall and CPU seconds, objective) and the median, so a number taken
on a busy shared machine can be told apart from the fit's own cost (CPU << wall means waiting).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from analysis import laws_chinchilla  # noqa: E402

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "analysis" / "reference"


def main() -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--csv", default=str(REFERENCE / "chinchilla_besiroglu.csv"))
  args = ap.parse_args()
  df = pd.read_csv(args.csv).sort_values("loss").iloc[:-5]
  walls = []
  for i in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    fit = laws_chinchilla.fit(df["N_params"], df["D_tokens"], df["loss"])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    walls.append(wall)
    print(f"repeat {i}: wall {wall:.2f} s, cpu {cpu:.2f} s, starts {fit.n_starts}, "
          f"objective {fit.objective:.6e}, alpha {fit.params['alpha']:.4f}, "
          f"beta {fit.params['beta']:.4f}")
  print(f"median wall time of the {fit.n_starts}-start approach-3 fit: "
        f"{statistics.median(walls):.2f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())

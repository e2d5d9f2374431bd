"""The run as an lm-eval model (`LM` interface), registered under the name "dlmscale".

  lm_eval --model dlmscale --model_args workdir=RUN[,mc_method=chain,mc_samples=K,batch_size=B]
  python -m dlmscale.lm_eval --workdir=RUN --tasks=...   (the same, with this project's flags)

The numbers are those of eval/harness.py (the scorer `python -m dlmscale.evaluate` uses). lm-eval is
optional (requirements-eval.txt); only this module and the command import it.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from dlmscale.eval import harness, scoring
from dlmscale.objectives.mdm import ElboSettings

MODEL_NAME = "dlmscale"


def _request(inst: Any) -> harness.Request:
  context, continuation = inst.args[0], inst.args[1]
  task, doc_id = getattr(inst, "task_name", None), getattr(inst, "doc_id", None)
  group = None if doc_id is None else (task, doc_id)
  return harness.Request(context, continuation, group, doc_id)


@register_model(MODEL_NAME)
class DlmscaleLM(LM):
  """A loaded run (train/open_run.load) answering lm-eval's three request types."""

  def __init__(self, run=None, *, workdir: str | None = None, mc_method: str = "",
               mc_estimator: str = "", mc_samples: int | None = None,
               batch_size: int | None = None, **_unused):
    super().__init__()
    if run is None:
      from dlmscale.train import open_run  # a library import: the loader, not a command

      def edit(c):
        if mc_samples:
          c.eval.mc_samples = int(mc_samples)

      run = open_run.load(workdir, edit)
    method = scoring.scoring_method(run.config.objective, mc_method)
    elbo = ElboSettings.of(run.config, estimator=mc_estimator or None)
    self.harness = harness.Harness(run, method=method, elbo=elbo,
                                   batch_size=int(batch_size or run.config.eval.batch_size))

  @classmethod
  def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
    args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
    extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k == "batch_size"}
    if "batch_size" in extra and str(extra["batch_size"]).isdigit():
      args.setdefault("batch_size", int(extra["batch_size"]))
    return cls(**args)

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    """Per task, so each task's items are seeded by their doc_id as the evaluator seeds them."""
    reqs = [_request(r) for r in requests]
    out: list[Any] = [None] * len(reqs)
    for task in dict.fromkeys(r.group[0] if r.group else None for r in reqs):
      idx = [n for n, r in enumerate(reqs) if (r.group[0] if r.group else None) == task]
      for n, res in zip(idx, self.harness.loglikelihood([reqs[n] for n in idx])):
        out[n] = res
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    return self.harness.loglikelihood_rolling([r.args[0] for r in requests])

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    out = []
    for r in requests:
      context, kw = r.args[0], dict(r.args[1] if len(r.args) > 1 else {})
      until = kw.get("until") or []
      until = [until] if isinstance(until, str) else list(until)
      temperature = float(kw.get("temperature", 0.0)) if kw.get("do_sample", False) else 0.0
      out.append(self.harness.generate(context, until, int(kw.get("max_gen_toks", 32)),
                                       temperature=temperature))
    return out

"""`python -m dlmscale.lm_eval`: the lm-eval harness adapter; the command is dlmscale/commands/lm_eval.py."""

if __name__ == "__main__":
  import runpy
  runpy.run_module("dlmscale.commands.lm_eval", run_name="__main__", alter_sys=True)

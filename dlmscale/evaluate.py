"""`python -m dlmscale.evaluate`: the evaluator, kept at its documented name; the command is dlmscale/commands/evaluate.py."""

if __name__ == "__main__":
  import runpy
  runpy.run_module("dlmscale.commands.evaluate", run_name="__main__", alter_sys=True)

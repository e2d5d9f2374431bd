"""`python -m launch.lr_choice`: kept at its documented name; the command is analysis/lr_choice.py."""

if __name__ == "__main__":
  import runpy
  runpy.run_module("analysis.lr_choice", run_name="__main__", alter_sys=True)

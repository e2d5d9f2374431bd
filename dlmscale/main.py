"""`python -m dlmscale.main`: the trainer (one run), kept at its documented name; the command is dlmscale/commands/train.py."""

if __name__ == "__main__":
  import runpy
  runpy.run_module("dlmscale.commands.train", run_name="__main__", alter_sys=True)

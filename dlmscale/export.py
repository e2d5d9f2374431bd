"""`python -m dlmscale.export`: the exporter; the command is dlmscale/commands/export.py."""

if __name__ == "__main__":
  import runpy
  runpy.run_module("dlmscale.commands.export", run_name="__main__", alter_sys=True)

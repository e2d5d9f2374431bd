"""`python -m dlmscale.sample`: the sampler, kept at its documented name; the command is dlmscale/commands/sample.py."""

if __name__ == "__main__":
  import runpy
  runpy.run_module("dlmscale.commands.sample", run_name="__main__", alter_sys=True)

"""`python -m dlmscale.data`, kept at its documented name; the command is dlmscale/commands/prepare_data.py."""

import runpy

runpy.run_module("dlmscale.commands.prepare_data", run_name="__main__", alter_sys=True)

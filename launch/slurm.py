"""Submits a grid as one SLURM array job, one task per unfinished point:

  python -m launch.slurm --config=configs/FILE.py[:ARGS] --workdir=DIR [--dry_run] \\
      [--partition=P] [--account=A] [--time=24:00:00] [--nodes=1] [--gpus_per_node=N] ...

The script goes to DIR/.slurm/ and is submitted with `sbatch --parsable`; `--dry_run` prints the
script and the commands instead and writes nothing. Each task skips a finished point, takes the
point's lock (flock, so a local launcher or a second submission never runs it twice), and runs
`srun python -m dlmscale.main ...`: one process per task of a multi-node allocation, which join
through `jax.distributed` (dlmscale/runtime/multihost.py detects SLURM). `--requeue` lets SLURM restart a
preempted task; `--signal=TERM@S` asks the trainer to checkpoint S seconds before the time limit, and
a task whose trainer stopped without its summary requeues itself, so a long run spans several
allocations (unless SLURM signalled the task's shell too: a cancelled task stays cancelled).
After the array, a dependent job writes the analysis report (when analysis/report.py exists).
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import subprocess
import sys

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from dlmscale.errors import UserError
from launch import grids as grid_lib, manifest as mf

REPO_ROOT = grid_lib.REPO_ROOT


def sbatch_header(args: argparse.Namespace, n_tasks: int, out_dir: pathlib.Path, job_name: str) -> list[str]:
  array = f"0-{n_tasks - 1}" + (f"%{args.max_concurrent}" if args.max_concurrent else "")
  opts = [f"--job-name={job_name}", f"--array={array}", f"--nodes={args.nodes}",
          f"--ntasks-per-node={args.tasks_per_node}", f"--time={args.time}"]
  opts += [f"--{flag}={value}" for flag, value in (
      ("gpus-per-node", args.gpus_per_node), ("cpus-per-task", args.cpus_per_task), ("mem", args.mem),
      ("partition", args.partition), ("account", args.account), ("qos", args.qos)) if value]
  opts += ["--requeue", f"--signal=TERM@{args.signal_s}", "--open-mode=append",
           f"--output={out_dir}/%A_%a.out", *args.sbatch_arg]
  return [f"#SBATCH {o}" for o in opts]


def task_script(grid: grid_lib.Grid, names: list[str], workdir: pathlib.Path, args: argparse.Namespace,
                header: list[str]) -> str:
  """The array task: index -> point; skip if finished; lock; srun the trainer; requeue if stopped."""
  py = shlex.quote(args.python)
  cases = []
  for i, name in enumerate(names):
    argv = " ".join(shlex.quote(a) for a in grid.trainer_args(name, workdir))
    cases.append(f"  {i}) RUN={shlex.quote(name)}; ARGS=({argv}) ;;")
  lines = [
      "#!/bin/bash", *header,
      f"# {len(names)} point(s) of {grid.spec} (grid hash {grid.hash}); written by launch/slurm.py",
      "set -uo pipefail",
      f"cd {shlex.quote(str(REPO_ROOT))}",
      *([args.setup] if args.setup else []),
      f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
      f"WORKDIR={shlex.quote(str(workdir))}",
      'case "$SLURM_ARRAY_TASK_ID" in', *cases,
      '  *) echo "no grid point for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
      "esac",
      f'mark() {{ {py} -m launch.manifest --workdir="$WORKDIR" --mark "$RUN=$1" || true; }}',
      f'if [ -f "$WORKDIR/$RUN/{run_dir.SUMMARY}" ]; then echo "$RUN already finished"; mark done; exit 0; fi',
      'mkdir -p "$WORKDIR/.locks" "$WORKDIR/$RUN"',
      'exec 9>"$WORKDIR/.locks/$RUN.lock"',
      "if command -v flock >/dev/null; then",
      "  flock -n -E 75 9; lk=$?",
      '  if [ "$lk" -eq 75 ]; then echo "$RUN is running elsewhere (its lock is held): not starting it twice"; exit 0; fi',
      '  if [ "$lk" -ne 0 ]; then echo "warning: no flock on this filesystem; the trainer\'s own lock still refuses a second run"; fi',
      "fi",
      '# (re-checked under the lock: another task may have finished the point in between)',
      f'if [ -f "$WORKDIR/$RUN/{run_dir.SUMMARY}" ]; then echo "$RUN already finished"; mark done; exit 0; fi',
      'echo "$(date -Is) task $SLURM_ARRAY_TASK_ID: $RUN (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-$(hostname)}"',
      "mark running",
      "# --signal=TERM@S reaches the trainer only; scancel, scontrol requeue and preemption also signal",
      "# this shell: SLURM then ends or requeues the task itself, and it must not requeue itself.",
      "SHELL_SIGNALLED=0",
      "trap 'SHELL_SIGNALLED=1; echo \"SIGTERM: the trainer checkpoints and stops\"' TERM",
      f'srun --kill-on-bad-exit=1 {py} -m {args.trainer_module} "${{ARGS[@]}}"',
      "rc=$?",
      f'if [ -f "$WORKDIR/$RUN/{run_dir.SUMMARY}" ]; then mark "done:$rc"; exit 0; fi',
      'if [ "$SHELL_SIGNALLED" -eq 1 ]; then',
      '  mark "preempted:$rc"; echo "$RUN stopped by SLURM (cancelled, requeued or preempted): not requeueing it here"; exit 0',
      "fi",
      f'if [ "$rc" -eq 0 ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {args.max_requeues} ]; then',
      '  mark "preempted:0"; echo "$RUN stopped before the end: requeueing to resume"',
      '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; exit 0',
      "fi",
      'mark "failed:$rc"; echo "$RUN failed with exit $rc: see the trainer output above" >&2',
      'exit "$rc"',
  ]
  return "\n".join(lines) + "\n"


def report_command(workdir: pathlib.Path, args: argparse.Namespace) -> list[str]:
  wrap = (f"cd {shlex.quote(str(REPO_ROOT))} && {shlex.quote(args.python)} -m analysis.report "
          f"--runs={shlex.quote(str(workdir))} --out={shlex.quote(str(workdir / 'report'))}")
  return ["sbatch", "--parsable", "--dependency=afterany:JOBID", "--job-name=dlmscale-report",
          f"--output={workdir}/.slurm/report-%j.out", "--time=01:00:00",
          *([f"--partition={args.partition}"] if args.partition else []),
          *([f"--account={args.account}"] if args.account else []), f"--wrap={wrap}"]


def build_parser() -> argparse.ArgumentParser:
  p = cli_guard.ArgumentParser(prog="python -m launch.slurm", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="grid file and argument, e.g. configs/datacons.py:scale=cluster")
  p.add_argument("--workdir", required=True, help="grid directory on a filesystem every node sees")
  p.add_argument("--dry_run", action="store_true", help="print the script and commands; submit and write nothing")
  p.add_argument("--partition", default="")
  p.add_argument("--account", default="")
  p.add_argument("--qos", default="")
  p.add_argument("--time", default="24:00:00", help="per allocation; longer runs requeue and resume")
  p.add_argument("--nodes", type=int, default=1, help="nodes per grid point (multi-node: jax.distributed)")
  p.add_argument("--tasks_per_node", type=int, default=1, help="processes per node (1 = one per host)")
  p.add_argument("--gpus_per_node", type=int, default=0)
  p.add_argument("--cpus_per_task", type=int, default=0)
  p.add_argument("--mem", default="", help="e.g. 64G")
  p.add_argument("--max_concurrent", type=int, default=0, help="array throttle (%%N); 0 = no limit")
  p.add_argument("--signal_s", type=int, default=300, help="SIGTERM this long before the time limit")
  p.add_argument("--max_requeues", type=int, default=50, help="self-requeues of one task before giving up")
  p.add_argument("--setup", default="", help="shell line run first, e.g. 'module load cuda/12'")
  p.add_argument("--sbatch_arg", action="append", default=[], help="extra #SBATCH option, e.g. --constraint=a100")
  p.add_argument("--python", default=sys.executable, help="interpreter on the compute nodes")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as launch.local")
  p.add_argument("--only", default="", help="as launch.local")
  p.add_argument("--extend", action="store_true", help="as launch.local")
  p.add_argument("--noreport", dest="report", action="store_false", help="no report job after the array")
  p.add_argument("--aot_check", action="store_true",
                 help="first compile every shape of the grid for --nodes x --gpus_per_node GPUs on this host "
                      "(launch.aot; needs --gpu_target_config and JAX's CUDA plugin); submit nothing if one "
                      "does not fit")
  p.add_argument("--gpu_target_config", default="",
                 help="for --aot_check: the nodes' GPU description, from bench/capture_gpu_target.py on one of them")
  p.add_argument("--trainer_module", default="dlmscale.main", help=argparse.SUPPRESS)
  return p


def aot_check(args: argparse.Namespace) -> int:
  """launch.aot for this grid on the allocation's GPUs; nothing is written (the table is printed)."""
  if args.gpus_per_node < 1:
    raise UserError("--aot_check compiles for the nodes' GPUs: give --gpus_per_node (e.g. 8)")
  from launch import aot  # pylint: disable=g-import-not-at-top  (imports the trainer's modules)
  check = argparse.Namespace(config=args.config, topology=[f"gpu:{args.nodes}x{args.gpus_per_node}"],
                             gpu_target_config=args.gpu_target_config, json="-", force=False, set=args.set,
                             only=args.only, max_tries=6, suggest=True)
  return aot.run(check)


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  workdir = pathlib.Path(args.workdir).expanduser().resolve()

  def body() -> int:
    run_dir.check_not_url(args.workdir)  # before the path is resolved into a local 'gs:' folder
    if args.nodes < 1 or args.tasks_per_node < 1:
      raise UserError("--nodes and --tasks_per_node must be at least 1")
    grid = grid_lib.load_points(args.config, grid_lib.parse_sets(args.set))
    names = [n for n in grid_lib.select_names(grid, args.only) if not mf.is_finished(workdir, n)]
    mf.check_compatible(workdir, mf.read(workdir), grid, args.extend)
    if not names:
      print(f"every selected point of {grid.spec} has finished in {workdir}; nothing to submit")
      return 0
    if args.aot_check and aot_check(args):
      print("--aot_check: a shape above does not compile or fit the GPUs; nothing submitted. Apply the "
            "suggested change (--set KEY=VALUE) or ask for more --nodes/--gpus_per_node.", file=sys.stderr)
      return 1
    out_dir = workdir / ".slurm"
    script_path = out_dir / f"{grid.path.stem}-{grid.hash}.sbatch"
    script = task_script(grid, names, workdir, args,
                         sbatch_header(args, len(names), out_dir, f"dlmscale-{grid.path.stem}"))
    submit = ["sbatch", "--parsable", str(script_path)]
    report = report_command(workdir, args) if args.report else None
    if args.dry_run:
      print(f"# {script_path}\n{script}")
      print(f"# submit:\n{shlex.join(submit)}")
      if report:
        print(f"# then, with JOBID from the submission:\n{shlex.join(report)}")
      return 0
    mf.init(workdir, grid, launcher="slurm", extend=args.extend)
    out_dir.mkdir(parents=True, exist_ok=True)
    script_path.write_text(script)
    job = _sbatch(submit)
    print(f"submitted array job {job}: {len(names)} task(s) of {grid.spec}\n  script {script_path}\n"
          f"  logs   {out_dir}/{job}_<index>.out\n  status python -m launch.manifest --workdir={workdir}")
    if report and (REPO_ROOT / "analysis" / "report.py").exists():
      print(f"  report job {_sbatch([a.replace('JOBID', job) for a in report])} after the array")
    return 0
  return cli_guard.cli_main(body)


def _sbatch(cmd: list[str]) -> str:
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  except FileNotFoundError:
    raise UserError("sbatch is not on PATH: run this on a SLURM login node (or use --dry_run)") from None
  if out.returncode:
    raise UserError(f"{shlex.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
  return out.stdout.strip().split(";")[0]


if __name__ == "__main__":
  sys.exit(main())

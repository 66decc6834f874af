r"""Runs a config's sweep: every override set as train.main + train.evaluate in its own workdir.

  python -m launch.sweep --config=configs/multi30k.py --sweep=positions --root=runs/positions \
      --parallel=2 [--backend=local|slurm|print] [--eval_splits=test_2016_flickr]
  python -m launch.report runs/positions          # table + plots

A config module names its sweeps either with a function `sweep(name) -> list[dict]` or a dict
`SWEEPS = {name: list[dict]}` (a module-level `sweep` dict works too). Each dict maps dotted
config keys to values, e.g. `{'model.position': 'rotary', 'seed': 1}`; it becomes
`--config.model.position=rotary --config.seed=1` and the workdir
`ROOT/model.position-rotary__seed-1` (keys that every run of the sweep sets alike are left out of
the name).

The config ARG and `--set=KEY=VALUE` apply to every run, so the same sweep at another size is one
flag: `--config=configs/multi30k.py:size=base`. After training, every `--eval_splits` split
(default `config.data.eval_splits`) is scored at `--checkpoint` (default `best`).

Backends:
- local: N runs at a time. A run whose `DONE.json` exists is skipped; any other run is (re)started
  and train.main resumes it from its checkpoints. Each run logs to `WORKDIR/sweep.log`; a failed
  run is reported at the end (exit code 1) and does not stop the others. Ctrl-C / SIGTERM passes
  SIGTERM to the running trainers (they checkpoint and exit); the next call resumes them. A root
  whose workdirs were trained with a different command (other ARG or --set) is refused.
- slurm: writes `ROOT/sweep.sbatch`, an array job with one task per run, and prints how to submit
  it. With `--slurm_nodes>1` each task starts one process per node (`srun`) through
  `launch.multihost`.
- print: prints the commands, one run per block.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence

from launch import sweep_plan

from train import cli
from train import config_file
from train import layout


# ---------------------------------------------------------------------------- local backend
class LocalRunner:
  """Runs sweeps N at a time in subprocesses; SIGINT/SIGTERM stop them (trainers checkpoint on
  SIGTERM)."""

  def __init__(self, parallel: int = 1, echo: Callable[[str], None] = print):
    self.parallel = max(1, int(parallel))
    self._echo = echo
    self._lock = threading.Lock()
    self._procs: set[subprocess.Popen] = set()
    self._stop = threading.Event()

  def say(self, message: str) -> None:
    with self._lock:
      self._echo(message)
      sys.stdout.flush()

  def stop(self, *_):
    """Asks every running command to stop; runs not started yet are not started."""
    self._stop.set()
    with self._lock:
      procs = list(self._procs)
    for proc in procs:
      try:
        os.killpg(proc.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass

  def _call(self, cmd: list[str], log) -> int:
    log.write(f'\n### {time.strftime("%Y-%m-%d %H:%M:%S")} $ {shlex.join(cmd)}\n')
    log.flush()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    # Own process group, so stopping a run reaches the trainer's children too.
    proc = subprocess.Popen(
      cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    with self._lock:
      self._procs.add(proc)
    try:
      return proc.wait()
    finally:
      with self._lock:
        self._procs.discard(proc)

  def run_one(self, run: sweep_plan.Run, eval_splits: Sequence[str]) -> str:
    """'done', 'failed: ...' or 'stopped'. Everything goes to WORKDIR/sweep.log."""
    start = time.time()
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, sweep_plan.LOG_FILE), 'a') as log:
      for step, cmd in [('train', run.train_cmd)] + [('evaluate', c) for c in run.eval_cmds]:
        if self._stop.is_set():
          return 'stopped'
        rc = self._call(cmd, log)
        if self._stop.is_set():
          return 'stopped'
        if rc != 0:
          return f'failed: {step} exited with {rc}'
        gap = sweep_plan.training_gap(run.workdir) if step == 'train' else None
        if gap:
          log.write(f'\n### {gap}\n')
          return f'failed: {gap}'
      try:
        sweep_plan.mark_done(run.workdir, eval_splits, seconds=round(time.time() - start, 1))
      except RuntimeError as e:
        log.write(f'\n### {e}\n')
        return f'failed: {e}'
    return 'done'

  def run_all(self, runs: Sequence[sweep_plan.Run], eval_splits: Sequence[str]) -> dict[str, str]:
    """Runs every unfinished run; returns {name: status} including 'skipped' ones."""
    status = {r.name: 'skipped' for r in runs if r.done}
    todo = [r for r in runs if not r.done]
    self.say(
      f'sweep: {len(runs)} runs, {len(status)} already done, {len(todo)} to run, '
      f'{self.parallel} at a time'
    )

    def work(run: sweep_plan.Run) -> str:
      if self._stop.is_set():
        return 'stopped'
      self.say(f'[start] {run.name}  (log: {os.path.join(run.workdir, sweep_plan.LOG_FILE)})')
      t0 = time.time()
      result = self.run_one(run, eval_splits)
      self.say(f'[{result}] {run.name}  ({time.time() - t0:.0f} s)')
      return result

    with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
      futures = {pool.submit(work, r): r for r in todo}
      for future in concurrent.futures.as_completed(futures):
        status[futures[future].name] = future.result()
    return status


def summarize(status: dict[str, str]) -> tuple[str, bool]:
  """One line per not-ok run plus totals; ok means every run is done or skipped."""
  bad = {n: s for n, s in status.items() if s not in ('done', 'skipped')}
  counts = {
    k: sum(s.startswith(k) for s in status.values())
    for k in ('done', 'skipped', 'failed', 'stopped')
  }
  lines = [f'  {s}: {n}' for n, s in sorted(bad.items())]
  lines.append('sweep: ' + ', '.join(f'{v} {k}' for k, v in counts.items()))
  return '\n'.join(lines), not bad


# --------------------------------------------------------------------------- slurm / print backends
def slurm_script(
  runs: Sequence[sweep_plan.Run],
  *,
  root: str,
  sweep: str,
  eval_splits: Sequence[str],
  python: str = sys.executable,
  nodes: int = 1,
  time_limit: str = '',
  partition: str = '',
  gpus_per_node: int = 0,
  cpus_per_task: int = 0,
  max_parallel: int = 0,
  sbatch_lines: Sequence[str] = (),
  repo: str | None = None,
) -> str:
  """An sbatch array script: task i runs run i (train, evaluate, mark done), skipping done runs."""
  root = os.path.abspath(root)
  repo = os.path.abspath(repo or os.getcwd())
  array = f'0-{len(runs) - 1}' + (f'%{max_parallel}' if max_parallel else '')
  head = [
    '#!/bin/bash',
    f'# {len(runs)} runs of sweep {sweep!r}, written by launch.sweep. Submit with:',
    f'#   sbatch {shlex.quote(os.path.join(root, "sweep.sbatch"))}',
    f'#SBATCH --job-name=attnlab-{re.sub(r"[^A-Za-z0-9_-]", "_", sweep)}',
    f'#SBATCH --array={array}',
    f'#SBATCH --nodes={nodes}',
    '#SBATCH --ntasks-per-node=1',
    f'#SBATCH --output={os.path.join(root, "slurm-%A_%a.out")}',
  ]
  head += [f'#SBATCH --time={time_limit}'] * bool(time_limit)
  head += [f'#SBATCH --partition={partition}'] * bool(partition)
  head += [f'#SBATCH --gpus-per-node={gpus_per_node}'] * bool(gpus_per_node)
  head += [f'#SBATCH --cpus-per-task={cpus_per_task}'] * bool(cpus_per_task)
  head += [f'#SBATCH {line.strip()}' for line in sbatch_lines if line.strip()]
  body = [
    'set -euo pipefail',
    f'cd {shlex.quote(repo)}',
    'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch}" in',
  ]
  # One process per node; multihost turns SLURM's environment into jax.distributed flags.
  launcher = (
    ['srun', '--ntasks-per-node=1', python, '-m', 'launch.multihost', '--'] if nodes > 1 else []
  )
  for run in runs:
    workdir = shlex.quote(run.workdir)
    body += [
      f'  {run.index})  # {run.name}',
      (
        f'    if [ -f {workdir}/{sweep_plan.DONE_FILE} ]; then '
        f'echo "already done: {run.name}"; exit 0; fi'
      ),
      '    ' + shlex.join(launcher + run.train_cmd),
    ]
    body += ['    ' + shlex.join(cmd) for cmd in run.eval_cmds]
    body += [
      '    '
      + shlex.join(
        [
          python,
          '-m',
          'launch.sweep',
          f'--mark_done={run.workdir}',
          f'--eval_splits={",".join(eval_splits)}',
        ]
      ),
      '    ;;',
    ]
  body += ['  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', 'esac']
  return '\n'.join(head + [''] + body) + '\n'


def print_commands(runs: Sequence[sweep_plan.Run]) -> str:
  blocks = []
  for run in runs:
    lines = [f'# {run.index}: {run.name}' + ('  (done)' if run.done else '')]
    lines += [shlex.join(cmd) for cmd in [run.train_cmd, *run.eval_cmds]]
    blocks.append('\n'.join(lines))
  return '\n\n'.join(blocks)


# ---------------------------------------------------------------------------- CLI
def _define_flags():
  from absl import flags

  flags.DEFINE_string(
    'config', None, 'Config file with a sweep, configs/NAME.py[:ARG]; ARG goes to every run.'
  )
  flags.DEFINE_string('sweep', None, 'Name of the sweep defined in the config file (e.g. smoke).')
  flags.DEFINE_string('root', None, 'Directory that holds one workdir per run.')
  flags.DEFINE_integer('parallel', 1, 'local: how many runs at a time.')
  flags.DEFINE_enum('backend', 'local', ['local', 'slurm', 'print'], 'Where the runs go.')
  flags.DEFINE_list(
    'eval_splits', None, 'Splits to evaluate after training (default config.data.eval_splits).'
  )
  flags.DEFINE_string(
    'checkpoint', 'best', 'Checkpoint train.evaluate scores: best | latest | STEP | avg_last:N.'
  )
  flags.DEFINE_multi_string(
    'set', [], 'KEY=VALUE config override for every run (e.g. --set=total_steps=100).'
  )
  flags.DEFINE_string('python', sys.executable, 'Python interpreter in the commands.')
  flags.DEFINE_string(
    'train_module', 'train.main', 'Module run for training (tests swap in a stub).'
  )
  flags.DEFINE_string('eval_module', 'train.evaluate', 'Module run for evaluation.')
  flags.DEFINE_integer('slurm_nodes', 1, 'slurm: nodes per run (>1 starts one process per node).')
  flags.DEFINE_string('slurm_time', '', 'slurm: --time per run, e.g. 04:00:00.')
  flags.DEFINE_string('slurm_partition', '', 'slurm: --partition.')
  flags.DEFINE_integer('slurm_gpus_per_node', 0, 'slurm: --gpus-per-node.')
  flags.DEFINE_integer('slurm_cpus_per_task', 0, 'slurm: --cpus-per-task.')
  flags.DEFINE_integer(
    'slurm_max_parallel', 0, 'slurm: at most this many array tasks at once (0: no cap).'
  )
  flags.DEFINE_multi_string('slurm_sbatch', [], 'slurm: extra #SBATCH option, e.g. --account=abc.')
  flags.DEFINE_string(
    'mark_done', None, 'Internal (slurm script): write WORKDIR/DONE.json after evaluation.'
  )
  return flags.FLAGS


def main(argv) -> int:
  """Exit 2 for a bad command line or config value, 1 for a runtime failure (train/cli.py)."""
  try:
    return _main(argv)
  except (OSError, RuntimeError) as e:  # a missing config file, a failed run, an unwritable root
    print(f'error: {cli.one_line(e)}', file=sys.stderr)
    return cli.RUNTIME_EXIT
  except ValueError as e:
    print(f'error: {cli.one_line(e)}', file=sys.stderr)
    return cli.USAGE_EXIT


def _main(argv) -> int:
  from absl import flags

  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; config overrides go in --set=KEY=VALUE')
  if FLAGS.mark_done:
    sweep_plan.mark_done(FLAGS.mark_done, FLAGS.eval_splits or [])
    return 0
  for name in ('config', 'sweep', 'root'):
    if not getattr(FLAGS, name):
      raise ValueError(f'--{name} is required (see python -m launch.sweep --help)')
  path, arg = config_file.split_spec(FLAGS.config)
  module = config_file.load_module(path)
  sweep_runs = sweep_plan.get_sweep(module, FLAGS.sweep, arg)
  splits = FLAGS.eval_splits or sweep_plan.default_eval_splits(path, arg, module)
  extra = []
  for item in FLAGS.set:
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise ValueError(f'--set={item!r}: expected KEY=VALUE, e.g. --set=total_steps=100')
    extra.append(f'--config.{key}={value}')
  runs = sweep_plan.plan_runs(
    config=FLAGS.config,
    sweep_runs=sweep_runs,
    root=FLAGS.root,
    eval_splits=splits,
    checkpoint=FLAGS.checkpoint,
    extra=extra,
    python=FLAGS.python,
    train_module=FLAGS.train_module,
    eval_module=FLAGS.eval_module,
  )
  if FLAGS.backend == 'print':
    print(print_commands(runs))
    return 0
  for run in runs:  # all checked before any is written
    sweep_plan.check_spec(run)
    if FLAGS.train_module == 'train.main':  # tests' stub trainers take stub configs
      sweep_plan.check_config(run)
  os.makedirs(FLAGS.root, exist_ok=True)
  for run in runs:
    sweep_plan.write_spec(run, config=FLAGS.config, sweep=FLAGS.sweep, eval_splits=splits)
  if FLAGS.backend == 'slurm':
    script = slurm_script(
      runs,
      root=FLAGS.root,
      sweep=FLAGS.sweep,
      eval_splits=splits,
      python=FLAGS.python,
      nodes=FLAGS.slurm_nodes,
      time_limit=FLAGS.slurm_time,
      partition=FLAGS.slurm_partition,
      gpus_per_node=FLAGS.slurm_gpus_per_node,
      cpus_per_task=FLAGS.slurm_cpus_per_task,
      max_parallel=FLAGS.slurm_max_parallel,
      sbatch_lines=FLAGS.slurm_sbatch,
    )
    target = os.path.join(FLAGS.root, 'sweep.sbatch')
    layout.write_text(target, script)
    print(
      f'wrote {target} ({len(runs)} array tasks). Submit with:\n  sbatch {shlex.quote(target)}\n'
      f'then: python -m launch.report {shlex.quote(FLAGS.root)}'
    )
    return 0
  runner = LocalRunner(FLAGS.parallel)
  signal.signal(signal.SIGTERM, runner.stop)
  signal.signal(signal.SIGINT, runner.stop)
  start = time.time()
  status = runner.run_all(runs, splits)
  text, ok = summarize(status)
  print(f'{text} in {(time.time() - start) / 60:.1f} min')
  if ok:
    print(f'next: python -m launch.report {shlex.quote(FLAGS.root)}')
  return 0 if ok else 1


if __name__ == '__main__':
  from train import cli

  cli.run(main, define_flags=_define_flags)

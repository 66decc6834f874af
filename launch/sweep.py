r"""Runs a config's sweep: every override set as train.main + train.evaluate in its own workdir.

  python -m launch.sweep --config=configs/multi30k.py --sweep=positions --root=runs/positions \
      --parallel=2 [--backend=local|slurm|print] [--eval_splits=test_2016_flickr]
  python -m launch.report runs/positions          # table + plots

A config module names its sweeps either with a function `sweep(name) -> list[dict]` or a dict
`SWEEPS = {name: list[dict]}` (a module-level `sweep` dict works too). Each dict maps dotted
config keys to values, e.g. `{'model.position': 'rotary', 'seed': 1}`; it becomes
`--config.model.position=rotary --config.seed=1` and the workdir `ROOT/model.position-rotary__seed-1`
(keys that every run of the sweep sets alike are left out of the name).

The config ARG and `--set=KEY=VALUE` apply to every run, so the same sweep at another size is one
flag: `--config=configs/multi30k.py:size=base`. After training, every `--eval_splits` split
(default `config.data.eval_splits`) is scored at `--checkpoint` (default `best`).

Backends:
- local: N runs at a time. A run whose `DONE.json` exists is skipped; any other run is (re)started
  and train.main resumes it from its checkpoints. Each run logs to `WORKDIR/sweep.log`; a failed
  run is reported at the end (exit code 1) and does not stop the others. Ctrl-C / SIGTERM passes
  SIGTERM to the running trainers (they checkpoint and exit); the next call resumes them. A root
  whose workdirs were trained with a different command (other ARG or --set) is refused.
- slurm: writes `ROOT/sweep.sbatch`, an array job with one task per run, and prints how to submit it.
  With `--slurm_nodes>1` each task starts one process per node (`srun`) through `launch.multihost`.
- print: prints the commands, one run per block.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

from train import layout

DONE_FILE = layout.DONE_FILE
SPEC_FILE = layout.SPEC_FILE
LOG_FILE = layout.LOG_FILE
_MAX_NAME = 120


# ---------------------------------------------------------------------------- sweep definition
def split_config_spec(spec: str) -> tuple[str, str | None]:
  """'configs/x.py:size=tiny' -> ('configs/x.py', 'size=tiny'); like ml_collections does."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def load_config_module(path: str):
  """Imports a config file by path (configs are plain modules that import no project code)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'config file {path!r} does not exist; pass --config=configs/NAME.py[:ARG]'
    )
  name = '_attnlab_sweep_config_' + re.sub(r'\W', '_', os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_sweep(module, name: str, arg: str | None = None) -> list[dict[str, Any]]:
  """The override dicts of sweep `name`, from `sweep(name[, arg])` or a dict of named sweeps."""
  source = getattr(module, 'sweep', None)
  if source is None:
    source = getattr(module, 'SWEEPS', None)
  where = getattr(module, '__file__', module)
  if source is None:
    raise ValueError(
      f'{where} defines no sweeps: add `def sweep(name)` or a dict `SWEEPS = {{name: [...]}}`'
    )
  if isinstance(source, dict):
    if name not in source:
      raise ValueError(f'unknown sweep {name!r} in {where}; valid choices: {sorted(source)}')
    runs = source[name]
  elif callable(source):
    n_params = len(inspect.signature(source).parameters)
    runs = source(name, arg) if n_params >= 2 else source(name)
  else:
    raise ValueError(f'{where}: `sweep` must be a function or a dict, got {type(source).__name__}')
  return validate_sweep(list(runs), f'sweep {name!r} of {where}')


def validate_sweep(runs: list, what: str) -> list[dict[str, Any]]:
  """Checks the shape of a sweep and that no two runs share a workdir."""
  if not runs:
    raise ValueError(f'{what} is empty')
  names = {}
  for i, overrides in enumerate(runs):
    if not isinstance(overrides, dict) or not all(isinstance(k, str) and k for k in overrides):
      raise ValueError(f'{what}: run {i} must be a dict of dotted config keys, got {overrides!r}')
    name = run_name(overrides)
    if name in names:
      raise ValueError(f'{what}: runs {names[name]} and {i} have the same overrides {overrides!r}')
    names[name] = i
  return runs


def format_value(value: Any) -> str:
  """A config value as ml_collections' flag parsers read it (tuples as '(a, b)')."""
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple, dict)):
    return repr(tuple(value) if isinstance(value, list) else value)
  return repr(value)  # bool -> 'True', None -> 'None', numbers exact


def override_flags(overrides: dict[str, Any]) -> list[str]:
  return [f'--config.{key}={format_value(value)}' for key, value in overrides.items()]


def run_name(overrides: dict[str, Any]) -> str:
  """Stable, filesystem-safe workdir name: sorted 'key-value' pairs joined by '__'."""
  if not overrides:
    return 'default'
  parts = []
  for key in sorted(overrides):
    value = format_value(overrides[key])
    parts.append(f'{key}-{value}')
  name = re.sub(r'[^A-Za-z0-9._+=-]+', '_', '__'.join(parts)).strip('._') or 'run'
  if len(name) > _MAX_NAME:
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=repr).encode()).hexdigest()[
      :10
    ]
    name = name[: _MAX_NAME - 11] + '_' + digest
  return name


def shared_overrides(sweep_runs: Sequence[dict]) -> set[str]:
  """Keys every run sets to the same value (e.g. a smoke sweep's tiny sizes): left out of names."""
  if len(sweep_runs) < 2:
    return set()
  first = sweep_runs[0]
  return {k for k in first if all(k in r and repr(r[k]) == repr(first[k]) for r in sweep_runs[1:])}


# ---------------------------------------------------------------------------- commands
@dataclasses.dataclass
class Run:
  """One run of a sweep: where it lives and the commands that make it."""

  index: int
  name: str
  workdir: str
  overrides: dict[str, Any]
  train_cmd: list[str]
  eval_cmds: list[list[str]]

  @property
  def done(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, DONE_FILE))


def plan_runs(
  *,
  config: str,
  sweep_runs: Sequence[dict],
  root: str,
  eval_splits: Sequence[str],
  checkpoint: str = 'best',
  extra: Sequence[str] = (),
  python: str = sys.executable,
  train_module: str = 'train.main',
  eval_module: str = 'train.evaluate',
) -> list[Run]:
  """The train and evaluate command of every run; `extra` are '--config.K=V' flags for all runs."""
  runs = []
  shared = shared_overrides(sweep_runs)
  for i, overrides in enumerate(sweep_runs):
    name = run_name({k: v for k, v in overrides.items() if k not in shared})
    workdir = os.path.join(os.path.abspath(root), name)
    train = [
      python,
      '-m',
      train_module,
      f'--config={config}',
      f'--workdir={workdir}',
      *override_flags(overrides),
      *extra,
    ]
    evals = [
      [
        python,
        '-m',
        eval_module,
        f'--workdir={workdir}',
        f'--checkpoint={checkpoint}',
        f'--split={split}',
      ]
      for split in eval_splits
    ]
    runs.append(Run(i, name, workdir, dict(overrides), train, evals))
  return runs


def default_eval_splits(config_path: str, arg: str | None, module=None) -> list[str]:
  """config.data.eval_splits from the config's `get_config(arg)`."""
  module = module or load_config_module(config_path)
  config = module.get_config(arg) if arg is not None else module.get_config()
  try:
    splits = list(config.data.eval_splits)
  except (AttributeError, KeyError, TypeError):
    splits = []
  if not splits:
    raise ValueError(
      f'{config_path} sets no config.data.eval_splits; pass --eval_splits=SPLIT[,SPLIT]'
    )
  return splits


# ---------------------------------------------------------------------------- files
# Indented, sorted JSON (anything else as its repr), atomically; launch.benchmark uses it too.
write_json_atomic = functools.partial(layout.write_json, default=repr)


def latest_eval_files(workdir: str, splits: Sequence[str]) -> dict[str, str]:
  """Per split, the file name of the newest `eval/{split}-{step}.json` or
  `-avg{N}@{step}.json` (from --checkpoint=avg_last:N): what the last evaluate call wrote."""
  return {s: os.path.basename(rel) for s, rel in layout.latest_results(workdir, splits).items()}


def mark_done(workdir: str, splits: Sequence[str], seconds: float | None = None) -> dict:
  """Writes DONE.json naming each split's results file; fails if one is missing."""
  results = layout.latest_results(workdir, splits)
  missing = [s for s in splits if s not in results]
  if missing:
    raise RuntimeError(f'{workdir}: evaluation wrote no eval/{{split}}-STEP.json for {missing}')
  marker = {
    'results': results,
    'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    'seconds': seconds,
  }
  write_json_atomic(os.path.join(workdir, DONE_FILE), marker)
  return marker


def training_gap(workdir: str) -> str | None:
  """Why training looks unfinished (newest checkpoint step < config total_steps), else None.

  A trainer that saves and exits cleanly on SIGTERM (preemption) returns 0 before the end; this
  keeps such a run from being evaluated and marked done. Unknown layouts count as finished, and
  so does a run that early stopping (config.patience) ended.
  """
  if os.path.exists(os.path.join(workdir, layout.STOPPED_FILE)):
    return None
  try:
    with open(os.path.join(workdir, layout.CONFIG_FILE)) as f:
      total = int(json.load(f)['total_steps'])
    names = os.listdir(os.path.join(workdir, layout.CKPT_DIR))
  except (OSError, ValueError, KeyError, TypeError):
    return None
  steps = [int(n) for n in names if n.isdigit()]
  if steps and max(steps) < total:
    return f'training stopped at step {max(steps)} of {total}'
  return None


def check_spec(run: Run) -> None:
  """Refuses a workdir that an earlier sweep filled with a different training command.

  Runs are named from their overrides only, so the same --root with another --config arg or
  --set would otherwise resume (or skip as done) someone else's run.
  """
  path = os.path.join(run.workdir, SPEC_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f).get('train_cmd', [])
  if old[1:] != run.train_cmd[1:]:  # [0] is the interpreter: a moved venv is fine
    raise ValueError(
      f'{run.workdir} holds a run trained with\n  {shlex.join(old[1:])}\n'
      f'not\n  {shlex.join(run.train_cmd[1:])}\npick another --root for these settings'
    )


def write_spec(run: Run, *, config: str, sweep: str, eval_splits: Sequence[str]) -> None:
  check_spec(run)
  os.makedirs(run.workdir, exist_ok=True)
  write_json_atomic(
    os.path.join(run.workdir, SPEC_FILE),
    {
      'name': run.name,
      'index': run.index,
      'overrides': run.overrides,
      'config': config,
      'sweep': sweep,
      'eval_splits': list(eval_splits),
      'train_cmd': run.train_cmd,
      'eval_cmds': run.eval_cmds,
    },
  )


# ---------------------------------------------------------------------------- local backend
class LocalRunner:
  """Runs sweeps N at a time in subprocesses; SIGINT/SIGTERM stop them (trainers checkpoint on SIGTERM)."""

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

  def run_one(self, run: Run, eval_splits: Sequence[str]) -> str:
    """'done', 'failed: ...' or 'stopped'. Everything goes to WORKDIR/sweep.log."""
    start = time.time()
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, LOG_FILE), 'a') as log:
      for step, cmd in [('train', run.train_cmd)] + [('evaluate', c) for c in run.eval_cmds]:
        if self._stop.is_set():
          return 'stopped'
        rc = self._call(cmd, log)
        if self._stop.is_set():
          return 'stopped'
        if rc != 0:
          return f'failed: {step} exited with {rc}'
        gap = training_gap(run.workdir) if step == 'train' else None
        if gap:
          log.write(f'\n### {gap}\n')
          return f'failed: {gap}'
      try:
        mark_done(run.workdir, eval_splits, seconds=round(time.time() - start, 1))
      except RuntimeError as e:
        log.write(f'\n### {e}\n')
        return f'failed: {e}'
    return 'done'

  def run_all(self, runs: Sequence[Run], eval_splits: Sequence[str]) -> dict[str, str]:
    """Runs every unfinished run; returns {name: status} including 'skipped' ones."""
    status = {r.name: 'skipped' for r in runs if r.done}
    todo = [r for r in runs if not r.done]
    self.say(
      f'sweep: {len(runs)} runs, {len(status)} already done, {len(todo)} to run, '
      f'{self.parallel} at a time'
    )

    def work(run: Run) -> str:
      if self._stop.is_set():
        return 'stopped'
      self.say(f'[start] {run.name}  (log: {os.path.join(run.workdir, LOG_FILE)})')
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


# ---------------------------------------------------------------------------- slurm / print backends
def slurm_script(
  runs: Sequence[Run],
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
      f'    if [ -f {workdir}/{DONE_FILE} ]; then echo "already done: {run.name}"; exit 0; fi',
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


def print_commands(runs: Sequence[Run]) -> str:
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
  try:
    return _main(argv)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


def _main(argv) -> int:
  from absl import flags

  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; config overrides go in --set=KEY=VALUE')
  if FLAGS.mark_done:
    mark_done(FLAGS.mark_done, FLAGS.eval_splits or [])
    return 0
  for name in ('config', 'sweep', 'root'):
    if not getattr(FLAGS, name):
      raise ValueError(f'--{name} is required (see python -m launch.sweep --help)')
  path, arg = split_config_spec(FLAGS.config)
  module = load_config_module(path)
  sweep_runs = get_sweep(module, FLAGS.sweep, arg)
  splits = FLAGS.eval_splits or default_eval_splits(path, arg, module)
  extra = []
  for item in FLAGS.set:
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise ValueError(f'--set={item!r}: expected KEY=VALUE, e.g. --set=total_steps=100')
    extra.append(f'--config.{key}={value}')
  runs = plan_runs(
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
    check_spec(run)
  os.makedirs(FLAGS.root, exist_ok=True)
  for run in runs:
    write_spec(run, config=FLAGS.config, sweep=FLAGS.sweep, eval_splits=splits)
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

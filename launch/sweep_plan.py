"""A sweep's plan: the override sets a config module names, each run's name, workdir and
commands, and the files that mark a run's state (`DONE.json`, the run spec, the latest eval
results). JAX-free and side-effect free apart from `mark_done` / `write_spec`; launch/sweep.py
runs the plan (local, slurm or print backends).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import shlex
import sys
import time
from typing import Any, Sequence

from train import config_file
from train import layout

DONE_FILE = layout.DONE_FILE
SPEC_FILE = layout.SPEC_FILE
LOG_FILE = layout.LOG_FILE
_MAX_NAME = 120


# ---------------------------------------------------------------------------- sweep definition
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
  module = module or config_file.load_module(config_path)
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


def check_config(run: Run) -> None:
  """Parses the run's `--config` flags exactly as its train.main will (ml_collections' own flag
  parser on a fresh FlagValues) and validates the result (train.config_io), so a bad sweep value
  or `--set` override fails before anything is launched, naming the run."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  from train import config_io  # pylint: disable=import-outside-toplevel  (imports JAX)

  argv = ['train.main'] + [a for a in run.train_cmd if a.startswith('--config')]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=fv, lock_config=False, sys_argv=argv)
  try:
    fv(argv)
    config_io.validate(fv.config)
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a missing key
    given = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    raise ValueError(
      f'run {run.name}: an override names a key the config does not have ({e}); overrides: {given}'
    ) from None
  except (flags.Error, ValueError) as e:
    raise ValueError(f'run {run.name}: {" ".join(str(e).split())}') from None


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

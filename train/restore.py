"""Which checkpoint of a workdir, loaded how: `latest | best | all | STEP | avg_last:N`.

The one place that turns a `--checkpoint=` value into params: train.evaluate, train.translate,
launch.plots and the fault campaign load through it. A `latest` or `best` checkpoint that fails
to restore falls back to the next candidate with a one-line warning (as train.main does); an
explicit STEP that fails is an error naming the steps that do restore.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging

import model
from train import averaging
from train import checkpointing
from train import cli
from train import config_io
from train import data
from train import layout


@dataclasses.dataclass
class Loaded:
  config: Any
  module: Any
  tokenizer: Any


def load_workdir(workdir: str) -> Loaded:
  """Resolved config, tokenizer and model module of a training workdir."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir={workdir}: no such directory')
  config = config_io.load_config(workdir)
  tokenizer = data.load_tokenizer(os.path.join(workdir, 'tokenizer'))
  if not config.model.get('vocab_size'):
    with config.unlocked():
      config.model.vocab_size = tokenizer.vocab_size
  return Loaded(config, model.build_model(config.model), tokenizer)


def resolve_steps(workdir: str, which: str) -> list[int]:
  """Checkpoint steps for `latest | best | all | STEP` (ascending)."""
  steps = sorted(int(s) for s in checkpointing.list_steps(workdir))
  if not steps:
    raise FileNotFoundError(
      f'{workdir}/checkpoints: no checkpoints; train first '
      f'(python -m train.main --workdir={workdir} --config=...)'
    )
  if which == 'latest':
    return steps[-1:]
  if which == 'all':
    return steps
  if which == 'best':
    best = checkpointing.best_step(workdir)
    if best is None:
      raise ValueError(
        f'{workdir}: no best checkpoint recorded (no validation metric was '
        'saved); use --checkpoint=latest or a step'
      )
    return [int(best)]
  try:
    step = int(which)
  except ValueError:
    raise cli.UsageError(
      f'--checkpoint={which!r}: use latest, best, all or a step number, or avg_last:N'
    ) from None
  if step not in steps:
    raise ValueError(
      f'--checkpoint={step}: no such checkpoint in {workdir}; available steps: {steps}'
    )
  return [step]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """What one evaluation loads: a checkpoint step, or the mean of several (avg_last:N)."""

  step: int  # the checkpoint's step; for an average, its newest step
  averaged: tuple[int, ...] = ()  # the steps averaged; empty for a plain checkpoint

  @property
  def label(self) -> str:
    """The step in result file names: '700', or 'avg10@700' for an average ending at 700."""
    return layout.step_label(self.step, len(self.averaged))


def resolve_checkpoints(workdir: str, which: str) -> list[Checkpoint]:
  """`resolve_steps`, plus `avg_last:N`: one Checkpoint averaging the N newest steps."""
  n = averaging.parse(which)
  if n is None:
    return [Checkpoint(step) for step in resolve_steps(workdir, which)]
  steps = averaging.last_steps(workdir, n)
  return [Checkpoint(steps[-1], tuple(steps))]


def load_params(workdir: str, checkpoint: Checkpoint, config=None):
  """Host-local params of `checkpoint` (an average is computed once, then read from disk)."""
  if checkpoint.averaged:
    return averaging.averaged_params(workdir, checkpoint.averaged, config)
  return checkpointing.restore_params(workdir, checkpoint.step, config)


def _candidates(workdir: str, which: str) -> list[Checkpoint]:
  """The checkpoints `which` may fall back to, in order: `latest` newest first, `best` by
  score (then newest first among unscored), anything else just itself."""
  if which not in ('latest', 'best'):
    return resolve_checkpoints(workdir, which)
  first = resolve_steps(workdir, which)[0]
  steps = sorted(checkpointing.list_steps(workdir), reverse=True)
  if which == 'best':
    scores = checkpointing.step_scores(workdir)
    steps = sorted(steps, key=lambda s: (scores.get(s) is None, -(scores.get(s) or 0), -s))
  return [Checkpoint(first)] + [Checkpoint(s) for s in steps if s != first]


def restorable_steps(workdir: str, config=None) -> list[int]:
  """Steps whose params restore (each one is read: for error messages, not hot paths)."""
  good = []
  for step in checkpointing.list_steps(workdir):
    try:
      checkpointing.restore_params(workdir, step, config)
      good.append(step)
    except checkpointing.CheckpointUnreadable:
      pass
  return good


def load_checkpoint(workdir: str, which: str, config=None) -> tuple[Checkpoint, Any]:
  """(checkpoint, params) for latest | best | STEP | avg_last:N. A `latest` or `best` that
  fails to restore is reported in one line and the next candidate is used, as train.main does;
  an explicit STEP that fails is an error naming the steps that do restore."""
  candidates = _candidates(workdir, which)
  for i, ckpt in enumerate(candidates):
    try:
      return ckpt, load_params(workdir, ckpt, config)
    except checkpointing.CheckpointUnreadable as e:
      if which not in ('latest', 'best'):
        good = [s for s in restorable_steps(workdir, config) if s != e.step]
        raise checkpointing.CheckpointUnreadable(e.step, workdir, e.cause, good) from None
      if i + 1 < len(candidates):
        logging.warning(
          '%s; using step %d instead (--checkpoint=%s)', e, candidates[i + 1].step, which
        )
  raise FileNotFoundError(
    f'{workdir}: no checkpoint restores (tried steps '
    f'{[c.step for c in candidates]}); retrain or restore the files'
  )

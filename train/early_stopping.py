"""Early stopping on validation (fairseq's --patience), and the validation history it reads.

`config.patience = P > 0`: training stops once P validations in a row have not improved on
the best score so far. The score is the checkpoint-selection one (checkpointing._score: val
BLEU when computed, else -val loss; higher is better, ties are no improvement). The run saves
a final checkpoint, writes WORKDIR/stopped.json (reason, step, best step and score, history)
and exits 0; relaunching it says so and trains no further.

Every validation is appended to WORKDIR/validation_history.json (rewritten atomically, before
that step's checkpoint is saved). A resumed run keeps only the entries up to the step it
restored, so after kill -9 the counter is rebuilt exactly as the uninterrupted run had it.
No JAX here: launch.sweep reads STOPPED_FILE to tell an early-stopped run from a cut-off one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

from train import layout

STOPPED_FILE = layout.STOPPED_FILE
HISTORY_FILE = layout.HISTORY_FILE


@dataclasses.dataclass(frozen=True)
class Decision:
  best_step: int | None  # step of the best score so far (None before any score)
  best_score: float | None
  evals_since_best: int  # validations after the best one that did not beat it
  stop: bool


def decide(history: Iterable[tuple[int, float | None]], patience: int) -> Decision:
  """The early-stopping state after the scored validations `history` [(step, score)], in
  order; a None score (nothing to select on) neither improves nor counts."""
  best_step, best_score, since = None, None, 0
  for step, score in history:
    if score is None:
      continue
    if best_score is None or score > best_score:
      best_step, best_score, since = int(step), float(score), 0
    else:
      since += 1
  return Decision(best_step, best_score, since, patience > 0 and since >= patience)


class EarlyStopping:
  """Validation history of a run and the patience decision over it.

  `resume_step`: the step training continues from (0 for a fresh run); later entries, left by
  a run that was killed before its next checkpoint, are dropped (they will be redone).
  Only the writer (process 0) touches files.
  """

  def __init__(self, workdir: str, patience: int, resume_step: int, write: bool = True):
    self.workdir, self.patience, self.write = workdir, int(patience or 0), write
    self.history: list[dict[str, Any]] = []
    path = os.path.join(workdir, HISTORY_FILE)
    if os.path.exists(path):
      with open(path) as f:
        old = json.load(f).get('history', [])
      self.history = [h for h in old if int(h['step']) <= int(resume_step)]
      if len(self.history) != len(old):
        self._save_history()

  @property
  def decision(self) -> Decision:
    return decide([(h['step'], h['score']) for h in self.history], self.patience)

  @property
  def stopped(self) -> bool:
    return self.decision.stop

  def update(self, step: int, metrics: dict[str, float], score: float | None) -> bool:
    """Records one validation (`score` from checkpointing._score); True = stop now."""
    self.history = [h for h in self.history if h['step'] < step]
    self.history.append(
      {
        'step': int(step),
        'score': None if score is None else float(score),
        'metrics': {k: float(v) for k, v in metrics.items()},
      }
    )
    self._save_history()
    return self.stopped

  def summary(self, step: int) -> str:
    d = self.decision
    return (
      f'early stopping at step {step}: validation did not improve for '
      f'{d.evals_since_best} evaluations (patience {self.patience}); best score '
      f'{d.best_score:.4f} at step {d.best_step} ({self._metric()}); see '
      f'{os.path.join(self.workdir, STOPPED_FILE)}'
    )

  def resume_message(self, step: int) -> str:
    return (
      f'this run stopped early at step {step} (validation did not improve for '
      f'{self.decision.evals_since_best} evaluations, patience {self.patience}; see '
      f'{os.path.join(self.workdir, STOPPED_FILE)}): not training further. To go on, '
      f'relaunch with a larger --config.patience, or 0 to turn early stopping off'
    )

  def write_stopped(self, step: int) -> None:
    d = self.decision
    if self.write:
      layout.write_json(
        os.path.join(self.workdir, STOPPED_FILE),
        {
          'reason': f'no improvement in {self._metric()} for {d.evals_since_best} validations '
          f'(patience {self.patience})',
          'step': int(step),
          'best_step': d.best_step,
          'best_score': d.best_score,
          'metric': self._metric(),
          'patience': self.patience,
          'history': self.history,
        },
        sort_keys=False,
      )

  def clear_stale(self) -> None:
    """Removes stopped.json when this run goes on training (its final checkpoint was lost, or
    patience was raised or turned off)."""
    path = os.path.join(self.workdir, STOPPED_FILE)
    if self.write and os.path.exists(path):
      os.remove(path)

  def _metric(self) -> str:
    last = self.history[-1]['metrics'] if self.history else {}
    return 'val_bleu' if 'val_bleu' in last else 'val_loss (score = -val_loss)'

  def _save_history(self) -> None:
    if self.write:
      layout.write_json(
        os.path.join(self.workdir, HISTORY_FILE), {'history': self.history}, sort_keys=False
      )

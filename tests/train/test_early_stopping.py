"""early_stopping.py: the patience decision, the history a resume truncates, the config key."""

import json
import os

import pytest

from configs import common
from train import checkpointing
from train import config_io
from train import early_stopping


def _first_stop(scores, patience, every=10):
  """Step at which a run validating every `every` steps with these scores stops, or None."""
  history = []
  for i, score in enumerate(scores):
    history.append(((i + 1) * every, score))
    if early_stopping.decide(history, patience).stop:
      return history[-1][0]
  return None


@pytest.mark.parametrize(
  'scores, patience, stop_at',
  [
    ([1, 2, 3, 4, 5], 1, None),  # always improving
    ([1, 2, 2, 2, 2], 3, 50),  # a tie is not an improvement
    ([1, 2, 1.5, 1.9, 1.8], 3, 50),  # 3 in a row below the best (2 at step 20)
    ([1, 2, 1.5, 2.5, 1, 1, 1], 3, 70),  # the improvement at 40 resets the count
    ([1, 2, 1.5, 2.5, 1, 1, 1], 4, None),
    ([1, 0, 0, 0], 1, 20),  # patience 1: the first non-improvement stops
    ([1, 0, 0, 0], 0, None),  # 0 = off
    ([None, None, 1, None, 0.5, 0.5], 2, 60),  # no score: neither improves nor counts
  ],
)
def test_scripted_scores_stop_at_the_right_step(scores, patience, stop_at):
  assert _first_stop(scores, patience) == stop_at


def test_decision_fields_and_loss_semantics():
  # The checkpoint-selection score: BLEU when present, else -loss (higher is better).
  losses = [3.0, 2.0, 2.5, 2.1]
  history = [(10 * (i + 1), checkpointing._score({'val_loss': x})) for i, x in enumerate(losses)]
  d = early_stopping.decide(history, 2)
  assert (d.best_step, d.best_score, d.evals_since_best, d.stop) == (20, -2.0, 2, True)
  bleu = checkpointing._score({'val_loss': 9.0, 'val_bleu': 0.0})
  assert bleu == 0.0  # a BLEU of 0 is a score, not "no metric"
  assert early_stopping.decide([], 3) == early_stopping.Decision(None, None, 0, False)


def test_history_is_truncated_to_the_resumed_step(tmp_path):
  wd = str(tmp_path)
  es = early_stopping.EarlyStopping(wd, 2, resume_step=0)
  for step, loss in ((10, 3.0), (20, 2.0), (30, 2.5), (40, 2.6)):
    stop = es.update(step, {'val_loss': loss}, -loss)
  assert stop and es.decision.best_step == 20
  # The run was killed after validating 40 but before checkpoint 40 was saved: resuming from
  # 30 forgets 40, so it is one non-improvement in, not stopped.
  es = early_stopping.EarlyStopping(wd, 2, resume_step=30)
  assert [h['step'] for h in es.history] == [10, 20, 30]
  assert not es.stopped and es.decision.evals_since_best == 1
  with open(os.path.join(wd, early_stopping.HISTORY_FILE)) as f:
    assert [h['step'] for h in json.load(f)['history']] == [10, 20, 30]
  assert es.update(40, {'val_loss': 2.2}, -2.2)
  es.write_stopped(40)
  with open(os.path.join(wd, early_stopping.STOPPED_FILE)) as f:
    stopped = json.load(f)
  assert (stopped['step'], stopped['best_step'], stopped['best_score']) == (40, 20, -2.0)
  assert stopped['patience'] == 2 and len(stopped['history']) == 4
  assert 'val_loss' in stopped['metric'] and 'patience 2' in stopped['reason']
  assert 'step 40' in es.summary(40) and 'best score -2.0000 at step 20' in es.summary(40)
  # Patience raised on relaunch: no longer stopped, and the stale marker goes.
  es = early_stopping.EarlyStopping(wd, 3, resume_step=40)
  assert not es.stopped
  es.clear_stale()
  assert not os.path.exists(os.path.join(wd, early_stopping.STOPPED_FILE))


def test_only_the_writer_touches_files(tmp_path):
  es = early_stopping.EarlyStopping(str(tmp_path), 1, resume_step=0, write=False)
  es.update(10, {'val_loss': 1.0}, -1.0)
  es.write_stopped(10)
  assert os.listdir(tmp_path) == []


def test_patience_config_key():
  config = common.base_config()
  assert config.patience == 0
  config_io.validate(config)
  for bad in (-1, 1.5, True):
    del config['patience']  # a fresh key: ConfigDict keeps a key's type
    config.patience = bad
    with pytest.raises(ValueError, match='patience.*non-negative integer'):
      config_io.validate(config)
  del config['patience']  # configs written before the key still load
  config_io.validate(config)


def test_sweep_counts_an_early_stopped_run_as_finished(tmp_path):
  from launch import sweep_plan

  (tmp_path / 'config.json').write_text(json.dumps({'total_steps': 100}))
  (tmp_path / 'checkpoints' / '40').mkdir(parents=True)
  assert sweep_plan.training_gap(str(tmp_path)) == 'training stopped at step 40 of 100'
  (tmp_path / early_stopping.STOPPED_FILE).write_text('{}')
  assert sweep_plan.training_gap(str(tmp_path)) is None

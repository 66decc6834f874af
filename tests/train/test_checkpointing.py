"""checkpointing.py: round trip, keep-N + best, fallback past a damaged step,
params-only restore."""

import glob
import os

import jax
import numpy as np
import pytest

from configs import common
from train import checkpointing
from train import mesh as mesh_lib
from train import trainer
from tests.train import toy


@pytest.fixture(scope='module')
def setup():
  cfg = common.base_config()
  cfg.checkpoint_every = 1
  cfg.keep_checkpoints = 2
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:2])
  module = toy.ToySeq2Seq()
  tx, _ = trainer.make_optimizer(cfg)
  batch = toy.make_batch()
  state, shardings = trainer.create_train_state(module, tx, cfg, mesh, batch)
  step = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
  host = jax.device_get(state)
  # The step donates its input, so every test starts from its own copy.
  fresh = lambda: jax.tree.map(lambda x, s: jax.device_put(x, s), host, shardings)
  return cfg, mesh, fresh, step, batch


def _advance(step_fn, state, batch, mesh):
  state, _ = step_fn(state, mesh_lib.global_batch(batch, mesh))
  return state


def _same(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_round_trip_keep_n_best_and_params_only(setup, tmp_path):
  cfg, mesh, fresh, step_fn, batch = setup
  state, template = fresh(), fresh()
  ck = checkpointing.Checkpointer(str(tmp_path), cfg)
  saved = {}
  metrics = {1: {'val_loss': 3.0}, 2: {'val_loss': 1.0}, 3: {'val_loss': 2.0}, 4: None, 5: None}
  for i in range(1, 6):
    state = _advance(step_fn, state, batch, mesh)
    saved[i] = jax.device_get(state)
    assert ck.save(state, {'epoch': 0, 'pos': i}, metrics=metrics[i])
  ck.wait()
  # Newest two plus the best by validation loss (step 2).
  assert checkpointing.list_steps(str(tmp_path)) == [2, 4, 5]
  assert checkpointing.best_step(str(tmp_path)) == 2
  restored, data_state = ck.restore_latest(template)
  assert data_state == {'epoch': 0, 'pos': 5}
  _same(restored, saved[5])
  assert restored.params['w1'].sharding == template.params['w1'].sharding
  params = checkpointing.restore_params(str(tmp_path), 2, cfg)
  _same(params, saved[2].params)
  ck.close()


def test_damaged_latest_falls_back_with_warning(setup, tmp_path, caplog):
  cfg, mesh, fresh, step_fn, batch = setup
  state, template = fresh(), fresh()
  ck = checkpointing.Checkpointer(str(tmp_path), cfg, async_save=False)
  saved = {}
  for i in range(1, 3):
    state = _advance(step_fn, state, batch, mesh)
    saved[i] = jax.device_get(state)
    ck.save(state, b'\x00grain-bytes', force=True)
  ck.close()
  # The OCDBT data files the params manifest points at (not the per-process scratch copies).
  files = glob.glob(str(tmp_path / 'checkpoints' / '2' / 'params' / 'd' / '*'))
  assert files
  for path in files:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  ck = checkpointing.Checkpointer(str(tmp_path), cfg)
  with caplog.at_level('WARNING'):
    restored, data_state = ck.restore_latest(template)
  assert 'checkpoint 2' in caplog.text and 'failed to restore' in caplog.text
  assert data_state == b'\x00grain-bytes'
  _same(restored, saved[1])
  assert checkpointing.list_steps(str(tmp_path)) == [1]
  assert os.path.isdir(tmp_path / 'checkpoints_bad' / '2')
  # Training on from step 1 can save step 2 again.
  assert ck.save(_advance(step_fn, restored, batch, mesh), b'x', force=True)
  ck.close()
  assert checkpointing.list_steps(str(tmp_path)) == [1, 2]


def test_unretrieved_read_errors_of_a_reported_restore_are_dropped(tmp_path):
  """asyncio's 'Task exception was never retrieved' record (as its default handler builds it)
  is dropped once the step it names was reported unreadable, and only then; other asyncio
  records and other steps' errors pass."""
  import logging  # pylint: disable=import-outside-toplevel

  bad = os.path.join(str(tmp_path), 'checkpoints', '40', 'params', 'manifest.ocdbt')
  other = os.path.join(str(tmp_path), 'checkpoints', '4', 'params', 'manifest.ocdbt')

  def record(msg, path):
    error = ValueError(f'DATA_LOSS: Error reading "{path}": Encoded length (7) is too short')
    exc_info = (ValueError, error, None)
    return logging.LogRecord('asyncio', logging.ERROR, 'base_events.py', 1, msg, (), exc_info)

  asyncio_logger = logging.getLogger('asyncio')
  never = 'Task exception was never retrieved\nfuture: <Task finished name=...>'
  assert asyncio_logger.filter(record(never, bad))  # not reported yet: passes
  checkpointing._report_bad(str(tmp_path), 40)  # pylint: disable=protected-access
  assert not asyncio_logger.filter(record(never, bad))
  assert asyncio_logger.filter(record(never, other))  # step 4 was not reported
  assert asyncio_logger.filter(record('Unclosed event loop', bad))

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


def test_unretrieved_write_errors_of_a_reported_save_are_dropped(tmp_path):
  """A save that ran out of space is reported in one line (CheckpointSaveError); asyncio's
  'Task exception was never retrieved' records of its other writes (they name Orbax's temporary
  step directory, as the real-tmpfs fault trial logged them) are dropped from then on, and
  only those: another step's write errors still pass."""
  import logging  # pylint: disable=import-outside-toplevel

  ckpts = os.path.join(str(tmp_path), 'checkpoints')

  def record(step, kind='Task'):
    path = os.path.join(ckpts, f'{step}.orbax-checkpoint-tmp', 'train.orbax-checkpoint-tmp', 'd')
    error = ValueError(
      f'RESOURCE_EXHAUSTED: Error writing "opt_state.1.mu" in OCDBT database at local file '
      f'"{path}": Failed to write 7076 bytes to file 8: No space left on device'
    )
    msg = f'{kind} exception was never retrieved\nfuture: <{kind} finished ...>'
    exc_info = (ValueError, error, None)
    return logging.LogRecord('asyncio', logging.ERROR, 'base_events.py', 1, msg, (), exc_info)

  asyncio_logger = logging.getLogger('asyncio')
  assert asyncio_logger.filter(record(15))  # nothing reported yet
  error = checkpointing._save_error(  # pylint: disable=protected-access
    str(tmp_path), [15, None], OSError(28, 'No space left on device')
  )
  assert 'save of step 15 failed (no space left on device)' in str(error)
  assert not asyncio_logger.filter(record(15))
  assert not asyncio_logger.filter(record(15, '_GatheringFuture'))  # asyncio's other wording
  assert asyncio_logger.filter(record(150)) and asyncio_logger.filter(record(1))


def test_failed_save_names_the_step_not_on_disk_and_the_intact_ones(setup, tmp_path):
  """An async save's failure surfaces at the next save or wait: the one-line error names the
  save that did not land (the running one, else the one being started), the reason, and the
  steps that survive."""
  cfg, mesh, fresh, step_fn, batch = setup
  state = _advance(step_fn, fresh(), batch, mesh)
  ck = checkpointing.Checkpointer(str(tmp_path), cfg)
  assert ck.save(state, b'x', force=True)
  ck.wait()

  class FullDisk:  # the manager as a full disk leaves it: every call raises
    def all_steps(self):
      return [1]

    def save(self, *args, **kwargs):
      raise OSError(28, 'No space left on device')

    wait_until_finished = save

  real, ck.manager = ck.manager, FullDisk()
  state = _advance(step_fn, state, batch, mesh)
  with pytest.raises(checkpointing.CheckpointSaveError) as e:
    ck.save(state, b'x', force=True)  # step 1 landed: the failure is step 2's
  assert str(e.value).startswith('checkpoint save of step 2 failed (no space left on device)')
  assert 'the saved steps [1] are intact' in str(e.value) and 'resumes from step 1' in str(e.value)
  ck._saving = 2  # pylint: disable=protected-access  # step 2's async save still running
  with pytest.raises(checkpointing.CheckpointSaveError, match='save of step 2 failed'):
    ck.save(_advance(step_fn, state, batch, mesh), b'x', force=True)  # it surfaces at step 3
  with pytest.raises(checkpointing.CheckpointSaveError, match='save of step 2 failed'):
    ck.wait()
  ck.manager = real
  ck.close()


def test_orbax_background_save_tracebacks_are_dropped():
  """The records Orbax's save threads log (with a traceback) before it raises the same error to
  the caller are dropped; Orbax records without a traceback, warnings, and everyone else's
  errors pass."""
  import logging  # pylint: disable=import-outside-toplevel

  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  orbax = os.path.join(os.path.dirname(ocp.__file__), '_src')  # where Orbax is installed
  exc_info = (OSError, OSError(28, 'No space left on device'), None)

  def record(path, level=logging.ERROR, msg='failed', exc=exc_info):
    return logging.LogRecord('absl', level, path, 1, msg, (), exc)

  absl_logger = logging.getLogger('absl')
  assert not absl_logger.filter(record(os.path.join(orbax, 'futures', 'future.py')))
  commit = os.path.join(orbax, 'checkpointers', 'async_checkpointer.py')
  assert not absl_logger.filter(record(commit))
  manager = os.path.join(orbax, '..', 'checkpoint_manager.py')
  assert not absl_logger.filter(record(manager, msg='Save Finalize thread (save_finalize) failed.'))
  assert absl_logger.filter(record(manager, msg='Restore failed'))
  assert absl_logger.filter(record(commit, exc=None))  # no traceback: passes
  assert absl_logger.filter(record(commit, level=logging.WARNING))
  assert absl_logger.filter(record(os.path.join(os.sep, 'repo', 'train', 'loop.py')))
  assert absl_logger.filter(record(os.path.join(os.sep, 'x', 'orbax', 'train', 'loop.py')))

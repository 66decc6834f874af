"""Orbax checkpoints of a run: params, optimizer state + step, and the data iterator state.

Layout: WORKDIR/checkpoints/<step>/{params, train, data}/. A step directory appears only once
every item is written (Orbax writes to a temporary name and renames), and old steps are
deleted only after the newer save has finalised, so a good checkpoint always exists.
Kept: the newest `keep_checkpoints` plus the best by validation metric (BLEU when computed,
else loss). A step that fails to restore is moved to WORKDIR/checkpoints_bad/ with a warning
and the previous one is used. Averages of several steps (train/averaging.py, `avg_last:N`)
live in WORKDIR/averaged/, outside this manager's view: never resumed from, never `latest`.
"""

import base64
import contextlib
import dataclasses
import json
import logging as std_logging
import os
import shutil
import sys
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from configs import common
from train import layout
from train import runtime

CKPT_DIR = layout.CKPT_DIR
BAD_DIR = layout.BAD_CKPT_DIR


class _OrbaxNotices(std_logging.Filter):
  """Two Orbax warnings that are not the user's business: every read-only manager (evaluate,
  translate, plots read checkpoints that way on purpose) announces 'Given directory is read
  only', and every save without metrics (saves between validations) 'Requested
  `tracked_metric`; did not provide metrics'. Installed on the absl logger Orbax writes to."""

  MESSAGES = ('Given directory is read only', 'Requested `tracked_metric`; did not provide')

  def filter(self, record):
    return not (record.levelno == std_logging.WARNING and str(record.msg).startswith(self.MESSAGES))


if not any(isinstance(f, _OrbaxNotices) for f in logging.get_absl_logger().filters):
  logging.get_absl_logger().addFilter(_OrbaxNotices())


class _FailedSaveRecords(std_logging.Filter):
  """A save that fails in Orbax's background threads (a full disk, say) is logged by each
  thread that saw it, at ERROR with a ~40-line traceback (three or four records), and then
  raised in the main thread at the next save or wait, where Checkpointer reports it as one
  CheckpointSaveError. Drop exactly those records: tracebacks logged by Orbax's background
  machinery (its futures, the async checkpointer's commit thread, the manager's finalize
  thread), whose errors Orbax hands on to the caller."""

  SOURCES = (
    os.path.join('futures', 'future.py'),
    os.path.join('checkpointers', 'async_checkpointer.py'),
  )

  ORBAX = runtime.install_dirs(('orbax',))

  def filter(self, record):
    if record.levelno < std_logging.ERROR or not record.exc_info:
      return True
    path = record.pathname
    if not path.startswith(self.ORBAX):
      return True
    return not (path.endswith(self.SOURCES) or 'Save Finalize thread' in record.getMessage())


if not any(isinstance(f, _FailedSaveRecords) for f in logging.get_absl_logger().filters):
  logging.get_absl_logger().addFilter(_FailedSaveRecords())


class CheckpointSaveError(OSError):
  """A checkpoint save failed; the steps saved before it are intact and a rerun resumes from the
  newest of them."""


def _save_error(workdir, steps, error: Exception) -> CheckpointSaveError:
  """One line for a failed save: the step (the first of `steps`, the saves that may have been
  running, that is not on disk), the reason, the steps that survive, what to do. Registers that
  step as reported (`_report_failed_save`), so its leftover write errors are not printed again."""
  text = ' '.join(str(error).split())
  full = 'No space left on device' in text or "os_error_code='28'" in text
  reason = 'no space left on device' if full else f'{type(error).__name__}: {text[:300]}'
  kept = list_steps(workdir)
  failed = next((s for s in steps if s is not None and s not in kept), steps[-1])
  _report_failed_save(workdir, failed)
  fix = f'free space on the disk of {workdir}, then rerun' if full else 'rerun'
  return CheckpointSaveError(
    f'checkpoint save of step {failed} failed ({reason}); the saved steps {kept} are intact: '
    f'{fix} and training resumes from step {kept[-1] if kept else 0}'
  )


def _closed_loop(exc_type, exc_value) -> bool:
  return exc_type is RuntimeError and str(exc_value) == 'Event loop is closed'


def _quiet_closed_loop(previous):
  """After a restore fails, TensorStore can finish a pending read once Orbax has closed the
  asyncio loop it ran on; its callback then raises 'Event loop is closed', which TensorStore
  reports as unraisable from its own thread, at random, even after a clean fallback. It is not
  the user's business: drop exactly that error and pass everything else on."""

  def hook(unraisable):
    if not _closed_loop(unraisable.exc_type, unraisable.exc_value):
      previous(unraisable)

  hook.attnlab_closed_loop = True
  return hook


if not getattr(sys.unraisablehook, 'attnlab_closed_loop', False):
  sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)


# Checkpoint step directories whose restore or save failed and was reported (CheckpointUnreadable,
# restore_latest's warning, CheckpointSaveError): `W/checkpoints/STEP/` and Orbax's temporary
# `W/checkpoints/STEP.orbax-checkpoint-tmp...` of a save.
_REPORTED_BAD = set()


def _report_bad(workdir, step):
  step_dir = os.path.join(os.path.abspath(workdir), CKPT_DIR, str(step))
  _REPORTED_BAD.update((step_dir + os.sep, step_dir + '.'))


def _report_failed_save(workdir, step):
  """After a save failed and is reported in one line: its other write tasks' errors (asyncio
  records, below) and the coroutines Orbax leaves unawaited when it abandons that save (a
  RuntimeWarning each, at exit) are the same failure."""
  _report_bad(workdir, step)
  warnings.filterwarnings(
    'ignore', message="coroutine 'async_serialize_from_host", category=RuntimeWarning
  )


class _ReportedCheckpointTasks(std_logging.Filter):
  """A failed restore or save reads or writes many arrays concurrently; the first error
  propagates (and is reported in one line), and asyncio logs every other task's error, with its
  traceback, as 'Task (or _GatheringFuture) exception was never retrieved' when it is collected.
  Drop exactly those: records of that kind whose exception names a step directory already
  reported."""

  def filter(self, record):
    # asyncio names the object: 'Task', 'Future', '_GatheringFuture' (seen for Orbax's writes)
    if not str(record.msg).split('\n', 1)[0].endswith('exception was never retrieved'):
      return True
    text = str(record.msg) + (str(record.exc_info[1]) if record.exc_info else '')
    return not any(path in text for path in _REPORTED_BAD)


if not any(
  isinstance(f, _ReportedCheckpointTasks) for f in std_logging.getLogger('asyncio').filters
):
  std_logging.getLogger('asyncio').addFilter(_ReportedCheckpointTasks())


# ----------------------------------------------------------------------------- data iterator state


class DataStateHandler(ocp.CheckpointHandler):
  """Each process writes its own iterator state (process_I-of-N.json) into the step directory.

  grain's own handler wants grain iterator objects; the train.data contract only promises
  get_state() returning JSON-able data or bytes, so this stores either.
  """

  def save(self, directory: epath.Path, args: 'DataStateSave'):
    state = args.state
    payload = (
      {'bytes_b64': base64.b64encode(state).decode()}
      if isinstance(state, bytes)
      else {'json': state}
    )
    name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    (directory / name).write_text(json.dumps(payload))

  def restore(self, directory: epath.Path, args: 'DataStateRestore' = None):
    del args
    path = directory / f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    if not path.exists():
      raise FileNotFoundError(
        f'{path}: no data state for this process (was the run started '
        f'with a different number of processes?)'
      )
    payload = json.loads(path.read_text())
    return base64.b64decode(payload['bytes_b64']) if 'bytes_b64' in payload else payload['json']

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


# ----------------------------------------------------------------------------- manager


def _score(metrics):
  """Higher is better: BLEU when present, else negative validation loss."""
  if metrics is None:
    return None
  if metrics.get('val_bleu') is not None:
    return float(metrics['val_bleu'])
  if metrics.get('val_loss') is not None:
    return -float(metrics['val_loss'])
  return None


def make_manager(workdir, *, keep=2, save_every=1, read_only=False, async_save=True):
  policy = ocp.checkpoint_managers.AnyPreservationPolicy(
    [
      ocp.checkpoint_managers.LatestN(n=max(int(keep), 1)),
      ocp.checkpoint_managers.BestN(
        get_metric_fn=lambda m: _score(m) or -np.inf, n=1, keep_checkpoints_without_metrics=False
      ),
    ]
  )
  options = ocp.CheckpointManagerOptions(
    save_interval_steps=0 if read_only else max(int(save_every), 1),
    preservation_policy=policy,
    # best_fn makes Orbax write each step's metrics (preservation uses the policy above).
    best_fn=lambda m: _score(m) or -np.inf,
    best_mode='max',
    enable_async_checkpointing=async_save,
    read_only=read_only,
    create=not read_only,
    cleanup_tmp_directories=not read_only,
  )
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, CKPT_DIR)),
    options=options,
    item_names=('params', 'train', 'data'),
    item_handlers={
      'params': ocp.StandardCheckpointHandler(),
      'train': ocp.StandardCheckpointHandler(),
      'data': DataStateHandler(),
    },
  )


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
  """Save / restore of (TrainState, data state) for one workdir."""

  def __init__(self, workdir, config, async_save=True):
    self.workdir = workdir
    self.manager = make_manager(
      workdir,
      keep=common.opt(config, 'keep_checkpoints', section=''),
      save_every=config.checkpoint_every,
      async_save=async_save,
    )
    self._saving = None  # the step of the newest save started (async: may still be writing)

  def save(self, state, data_state, metrics=None, force=False):
    """Starts an async save of `state` at state.step; returns whether one was started. Raises
    CheckpointSaveError if this save, or the previous one still finishing, fails."""
    step = int(jax.device_get(state.step))
    if step in self.manager.all_steps():
      return False
    with self._surfacing_failures(step):
      started = self.manager.save(
        step,
        force=force,
        metrics=metrics,
        args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          train=ocp.args.StandardSave({'step': state.step, 'opt_state': state.opt_state}),
          data=DataStateSave(data_state),
        ),
      )
    if started:
      self._saving = step
    return started

  @contextlib.contextmanager
  def _surfacing_failures(self, step=None):
    """An async save's failure surfaces at the next Orbax call (the next save, which first
    waits for the running one, or a wait): name the save that is not on disk."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  # whatever the storage raised
      raise _save_error(self.workdir, [self._saving, step], e) from e

  def restore_latest(self, state):
    """(state, data_state) from the newest step that restores, or (None, None).

    `state` is a template whose shapes, dtypes and shardings the restored arrays take.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        out = self.manager.restore(
          step,
          args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(state.params)),
            train=ocp.args.StandardRestore(
              _abstract({'step': state.step, 'opt_state': state.opt_state})
            ),
            data=DataStateRestore(),
          ),
        )
        if int(out.train['step']) != step:
          raise ValueError(f'checkpoint {step} holds step {int(out.train["step"])}')
      except Exception as e:  # pylint: disable=broad-except
        _report_bad(self.workdir, step)
        logging.warning(
          'checkpoint %d in %s failed to restore (%s: %s); moving it to %s/ and '
          'trying the previous one',
          step,
          self.workdir,
          type(e).__name__,
          str(e)[:300],
          BAD_DIR,
        )
        self._set_aside(step)
        continue
      new = state.replace(
        step=out.train['step'], params=out.params, opt_state=out.train['opt_state']
      )
      return new, out.data
    return None, None

  def _set_aside(self, step):
    """Moves a broken step out of Orbax's view, so a retrained step of the same number can be
    saved and the evidence is kept for inspection."""
    if jax.process_index() == 0:
      src = os.path.join(self.workdir, CKPT_DIR, str(step))
      dst_root = os.path.join(self.workdir, BAD_DIR)
      os.makedirs(dst_root, exist_ok=True)
      dst = os.path.join(dst_root, str(step))
      if os.path.exists(dst):
        shutil.rmtree(dst)
      if os.path.exists(src):
        os.replace(src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

      multihost_utils.sync_global_devices(f'attnlab_set_aside_{step}')
    self.manager.reload()

  def wait(self):
    with self._surfacing_failures():
      self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


# ----------------------------------------------------------------------------- contract functions


@contextlib.contextmanager
def _reader(workdir):
  """A read-only manager, closed after use (an open one outlives a failed restore's async
  work and prints 'Event loop is closed' tracebacks at exit)."""
  manager = make_manager(workdir, read_only=True)
  try:
    yield manager
  finally:
    manager.close()


def list_steps(workdir):
  """Steps with a complete checkpoint in WORKDIR/checkpoints, ascending."""
  if not os.path.isdir(os.path.join(workdir, CKPT_DIR)):
    return []
  with _reader(workdir) as manager:
    return sorted(manager.all_steps())


def best_step(workdir):
  """Step with the best validation metric (BLEU if recorded, else loss); None if none."""
  scores = step_scores(workdir)
  return max(scores, key=lambda s: (scores[s], s)) if scores else None


def step_scores(workdir):
  """{step: validation score (higher is better)} for the steps that recorded one."""
  if not os.path.isdir(os.path.join(workdir, CKPT_DIR)):
    return {}
  with _reader(workdir) as manager:
    scores = {s: _score(manager.metrics(s)) for s in manager.all_steps()}
  return {s: v for s, v in scores.items() if v is not None}


def restore_params(workdir, step, config=None):
  """Unboxed params of checkpoint `step` as host-local arrays on the first local device.

  Shapes come from the checkpoint's own metadata, so this works in a process that has a
  different mesh (or a single CPU) than the training run.
  """
  del config  # the checkpoint describes itself; kept for the contract's signature
  with _reader(workdir) as manager:
    if step not in manager.all_steps():
      raise FileNotFoundError(
        f'{workdir}/{CKPT_DIR}: no checkpoint for step {step}; '
        f'available: {sorted(manager.all_steps())}'
      )
    try:
      meta = manager.item_metadata(step)['params']
      if meta is None:
        raise ValueError('its params metadata is missing')
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
      out = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    except Exception as e:  # pylint: disable=broad-except  # TensorStore, Orbax, JSON, OS errors
      _report_bad(workdir, step)
      raise CheckpointUnreadable(step, workdir, e) from None
  return out.params


class CheckpointUnreadable(OSError):
  """A listed checkpoint whose params do not restore (truncated, deleted or corrupt files)."""

  def __init__(self, step, workdir, cause, good_steps=None):
    reason = ' '.join(f'{type(cause).__name__}: {cause}'.split())
    message = f'checkpoint {step} in {workdir} cannot be restored ({reason[:200]})'
    if good_steps is not None:
      message += f'; steps that restore: {list(good_steps) or "none"}'
    super().__init__(message)
    self.step, self.workdir, self.cause = step, workdir, cause

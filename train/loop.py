"""The training loop: builds everything from a config, restores the newest good checkpoint,
trains, validates, checkpoints, and stops on schedule, on patience, on SIGTERM or on a NaN.

`train.main` is its command line; tests and launchers call `train_and_evaluate` directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

import model
from configs import common
from train import checkpointing
from train import config_io
from train import data
from train import early_stopping
from train import embed_init
from train import decode_text
from train import layout
from train import mesh as mesh_lib
from train import metrics as metrics_lib
from train import runtime
from train import trainer


class NaNLossError(FloatingPointError):
  pass


def batch_hash(batch) -> str:
  h = hashlib.sha1()
  for k in sorted(batch):
    h.update(k.encode())
    h.update(batch[k].tobytes())
  return h.hexdigest()[:16]


def check_finite(pending, last_saved) -> None:
  """Raises NaNLossError at the first step whose loss or gradient norm is not finite."""
  for step, m in pending:
    loss, gnorm = (float(x) for x in jax.device_get((m['loss'], m['grad_norm'])))
    if not (np.isfinite(loss) and np.isfinite(gnorm)):
      raise NaNLossError(
        f'loss={loss} grad_norm={gnorm} at step {step}: training diverged and was stopped. '
        f'The last good checkpoint is step {last_saved} (nothing non-finite was saved). '
        f'Try a lower --config.optim.learning_rate, longer --config.optim.warmup_steps, '
        f'or --config.optim.clip_norm=1.0.'
      )


# ============================================================================= validation


def run_validation(config, module, params, tokenizer, val_batches, step) -> dict[str, float]:
  """{'val_loss', 'val_accuracy', 'val_bleu'/'val_exact_match' if decoding is on; for multi30k
  also 'val_bleu_lit' (the literature's lowercased tokenized BLEU; val_bleu still picks `best`)}."""
  if jax.process_count() > 1:
    params = multihost_utils.process_allgather(params, tiled=True)
  out = trainer.eval_loss(module, params, val_batches, config)
  result = {'val_loss': out['loss'], 'val_accuracy': out['accuracy']}
  n = int(decode_text.eval_option(config, 'bleu_sentences'))
  if n > 0:
    t0 = time.time()
    scores = decode_text.decode_and_score(
      config,
      module,
      params,
      tokenizer,
      config.data.eval_splits[0],
      max_sentences=n,
      decode=config.eval.get('train_decode') or config.eval.decode,
    )
    for key in ('bleu', 'bleu_lit', 'chrf', 'exact_match'):
      if scores.get(key) is not None:
        result[f'val_{key}'] = float(scores[key])
    logging.info(
      'step %d: decoded %d %s sentences in %.1fs',
      step,
      n,
      config.data.eval_splits[0],
      time.time() - t0,
    )
  return result


# ============================================================================= set-up


@dataclasses.dataclass
class Run:
  """Everything the loop works with, built once by `build_run`."""

  config: Any
  workdir: str
  tokenizer: Any
  module: Any
  mesh: Any
  tx: Any
  train_iter: Any
  state: Any
  shardings: Any
  ckpt: checkpointing.Checkpointer
  restored: bool
  stopper: early_stopping.EarlyStopping
  step_fn: Any


def prepare_workdir(config, workdir, tokenizer, process_index) -> None:
  """Process 0 writes the resolved config and tokenizer; a changed config is logged."""
  if process_index != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  if os.path.exists(os.path.join(workdir, layout.CONFIG_FILE)):
    changed = config_io.diff(config_io.load_config(workdir), config)
    if changed:
      logging.warning('resuming with a changed config:\n  %s', '\n  '.join(changed))
  config_io.save_config(config, workdir)
  tokenizer.save(os.path.join(workdir, 'tokenizer'))


def init_embeddings(state, shardings, config, workdir):
  """word2vec vectors for the token table(s) (`model.embed_init`); a resumed run overwrites
  them with its checkpoint."""
  params = embed_init.init_embeddings_from(
    state.params,
    config.model.embed_init,
    std=config.model.d_model**-0.5,
    tokenizer_dir=os.path.join(workdir, 'tokenizer'),
  )
  logging.info('embeddings initialised from word2vec run %s', config.model.embed_init)
  return state.replace(params=jax.device_put(params, shardings.params))


def build_run(config, workdir, devices=None) -> Run:
  """Config, tokenizer, model, mesh, data, state (restored when a checkpoint exists)."""
  pid, nproc = jax.process_index(), jax.process_count()
  data.build(config)  # idempotent; usually done by train.data.prepare
  tokenizer = data.get_tokenizer(config)
  config = config_io.resolve(config, tokenizer.vocab_size)
  prepare_workdir(config, workdir, tokenizer, pid)

  mesh = mesh_lib.make_mesh(config.mesh, devices)
  logging.info(
    'mesh %s over %d devices (%s)',
    dict(mesh.shape),
    jax.device_count(),
    jax.devices()[0].device_kind,
  )
  train_iter = data.make_train_iterator(config, tokenizer, process_index=pid, process_count=nproc)
  start_state = train_iter.get_state()
  example = next(train_iter)  # shapes for init only; the iterator is rewound
  train_iter.set_state(start_state)
  t = trainer.setup(config, mesh, example)
  state = t.state
  logging.info('model: %s parameters', f'{model.count_params(state.params):,}')
  if config.model.get('embed_init'):
    state = init_embeddings(state, t.shardings, config, workdir)

  ckpt = checkpointing.Checkpointer(workdir, config)
  restored, data_state = ckpt.restore_latest(state)
  if restored is not None:
    state = restored
    train_iter.set_state(data_state)
    logging.info('resumed from step %d', int(state.step))
  stopper = early_stopping.EarlyStopping(  # patience; history truncated to this step
    workdir,
    common.opt(config, 'patience', section=''),
    int(jax.device_get(state.step)),
    write=pid == 0,
  )
  return Run(
    config,
    workdir,
    tokenizer,
    t.module,
    mesh,
    t.tx,
    train_iter,
    state,
    t.shardings,
    ckpt,
    restored is not None,
    stopper,
    t.step_fn,
  )


# ============================================================================= the loop


class Loop:
  """The step loop over a built `Run`: logging, validation, checkpoints, stopping."""

  def __init__(self, run: Run):
    self.run = run
    config = run.config
    self.step = int(jax.device_get(run.state.step))
    self.last_saved = self.step if run.restored else None
    self.pending = []  # (step, device metrics) not yet checked for NaN
    self.flops_cache = {}
    self.val_split = config.data.eval_splits[0] if config.data.eval_splits else None
    self.val_batches = None
    self.writer = metrics_lib.Writer(run.workdir)
    self.meter = metrics_lib.Meter(
      config.total_steps, run.mesh.size, jax.devices()[0].device_kind, config.model.dtype
    )
    self.hash_log = (
      open(os.path.join(run.workdir, f'batches-p{jax.process_index()}.txt'), 'a')
      if config.get('log_batch_hashes')
      else None
    )

  def close(self):
    self.writer.close()
    if self.hash_log:
      self.hash_log.close()

  # --- pieces of one step --------------------------------------------------------------------
  def check_pending(self):
    check_finite(self.pending, self.last_saved)
    self.pending.clear()

  def save(self, metrics=None, force=False):
    self.check_pending()
    r = self.run
    if r.ckpt.save(r.state, r.train_iter.get_state(), metrics=metrics, force=force):
      self.last_saved = int(jax.device_get(r.state.step))

  def train_step(self, first: bool):
    r = self.run
    batch = next(r.train_iter)
    if self.hash_log:
      self.hash_log.write(f'{self.step + 1} {batch_hash(batch)}\n')
      self.hash_log.flush()
    r.state, m = r.step_fn(r.state, mesh_lib.global_batch(batch, r.mesh))
    self.step += 1
    self.pending.append((self.step, m))
    if len(self.pending) > 2:
      # At most two steps in flight: a SIGTERM is then handled within ~2 steps, and the
      # host never races ahead of the device by a whole logging interval.
      jax.block_until_ready(self.pending[-3][1]['loss'])
    nproc = jax.process_count()
    shape = tuple(batch['targets'].shape) + tuple(batch.get('inputs', np.zeros((0, 0))).shape)
    if shape not in self.flops_cache:
      self.flops_cache[shape] = metrics_lib.batch_flops(r.config.model, batch) * nproc
    self.meter.add(float(np.sum(batch['weights'])) * nproc, self.flops_cache[shape])
    if first:  # leave the first step's compile out of the rates
      jax.block_until_ready(m['loss'])
      self.meter.reset(time.time())

  def log_train(self):
    values = jax.device_get(self.pending[-1][1])
    self.check_pending()
    rates = self.meter.rates(self.step)
    metrics_lib.log(metrics_lib.console_line(self.step, self.run.config.total_steps, values, rates))
    self.writer.scalars(
      self.step,
      {
        k: values[k]
        for k in ('loss', 'loss_kl', 'nll', 'accuracy', 'lr', 'grad_norm', 'param_norm')
      },
      'train',
    )
    self.writer.scalars(self.step, rates, 'perf')
    self.meter.reset(time.time())

  def validate(self) -> dict[str, float]:
    r = self.run
    self.check_pending()
    if self.val_batches is None:
      n = int(decode_text.eval_option(r.config, 'loss_sentences')) or None
      self.val_batches = data.make_eval_batches(
        r.config, r.tokenizer, self.val_split, max_examples=n
      )
    result = run_validation(
      r.config, r.module, r.state.params, r.tokenizer, self.val_batches, self.step
    )
    metrics_lib.log(f'step {self.step} | ' + ' | '.join(f'{k} {v:.4f}' for k, v in result.items()))
    self.writer.scalars(self.step, {k[4:]: v for k, v in result.items()}, 'eval')
    self.writer.flush()
    self.meter.reset(time.time())  # validation time is not training throughput
    return result

  # --- the loop ------------------------------------------------------------------------------
  def __call__(self, preemption: runtime.Preemption) -> str:
    r, config = self.run, self.run.config
    if runtime.agreed(r.stopper.stopped and self.step < config.total_steps):
      r.stopper.write_stopped(self.step)  # again, in case a kill came before it was written
      logging.warning('%s', r.stopper.resume_message(self.step))
      return 'stopped_early'
    r.stopper.clear_stale()
    first = True
    while self.step < config.total_steps:
      if preemption.any_process():
        self.save(force=True)
        r.ckpt.wait()
        logging.warning('preempted at step %d; checkpoint saved, exiting with status 0', self.step)
        return 'preempted'
      self.train_step(first)
      first = False
      step = self.step
      is_last = step == config.total_steps
      is_eval = is_last or (config.eval_every and step % config.eval_every == 0)
      is_log = is_last or step % config.log_every == 0
      is_ckpt = is_last or is_eval or step % config.checkpoint_every == 0
      if is_log:
        self.log_train()
      eval_metrics, stop = None, False
      if is_eval and self.val_split:
        eval_metrics = self.validate()
        stop = runtime.agreed(
          r.stopper.update(step, eval_metrics, checkpointing._score(eval_metrics)) and not is_last
        )
      if is_ckpt:
        self.save(metrics=eval_metrics, force=is_last or is_eval)
      if stop:  # patience ran out: this step's checkpoint is final
        r.ckpt.wait()
        r.stopper.write_stopped(step)
        logging.warning('%s', r.stopper.summary(step))
        return 'stopped_early'
    self.check_pending()
    r.ckpt.wait()
    return 'done'


def train_and_evaluate(config, workdir, devices=None) -> str:
  """Builds everything from the config, restores the newest good checkpoint, trains.

  Returns 'done', 'preempted' or 'stopped_early'. `devices` (default: all) is for tests that
  train in-process on part of the machine.
  """
  lock = layout.WorkdirLock(workdir) if jax.process_index() == 0 else None
  if lock is not None:
    stale = lock.acquire()  # before anything is written: WorkdirBusy if taken
    if stale:
      logging.warning(
        'took over %s from pid %s on %s, which is no longer running',
        lock.path,
        stale.get('pid', '?'),
        stale.get('host', '?'),
      )
  preemption = runtime.Preemption()
  run = None
  loop = None
  finished = False
  try:
    run = build_run(config, workdir, devices)
    loop = Loop(run)
    outcome = loop(preemption)
    finished = True
    return outcome
  finally:
    closers = [preemption.close]
    if run is not None:
      closers += [run.ckpt.close, getattr(run.train_iter, 'close', lambda: None)]
    if loop is not None:
      closers.append(loop.close)
    if lock is not None:
      closers.append(lock.release)
    error = close_all(closers)
    if error is not None:
      if finished:
        raise error
      # The error that stopped the run is the one to report; this one followed from it.
      logging.warning('while stopping after the error below: %s: %s', type(error).__name__, error)


def close_all(closers) -> Exception | None:
  """Calls every closer, even after one fails (the workdir lock must still be released);
  returns the first error."""
  first = None
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except  # reported by the caller
      first = first or e
  return first

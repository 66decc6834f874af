r"""Train a model from a config; resumes from WORKDIR automatically.

  python -m train.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

With `--config.patience=P` training stops once P validations in a row did not improve
(train/early_stopping.py: WORKDIR/stopped.json says why; a relaunch trains no further).

Multi-host: run the same command on every host with `--coordinator_address=H:P
--num_processes=N --process_id=I` (launch/multihost.py adds them), or `--multihost_auto` where
JAX finds the cluster itself (SLURM, Cloud TPU).
"""
import hashlib
import os
import signal
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags; defined only when run as a program, so modules that import this one
  (tests, launchers) can define their own --config."""
  config_flags.DEFINE_config_file('config', None, 'configs/NAME.py[:ARG]', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Run directory: config, tokenizer, checkpoints, tb/.')
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (multi-host).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host).')
  flags.DEFINE_integer('process_id', None, 'This process (multi-host).')
  flags.DEFINE_bool('multihost_auto', False, 'jax.distributed.initialize() with auto-detection.')


class NaNLossError(FloatingPointError):
  pass


# ============================================================================= distributed

def maybe_initialize_distributed(config):
  """jax.distributed.initialize() when flags, config or a multi-task SLURM job ask for it."""
  import jax  # pylint: disable=import-outside-toplevel
  coordinator = FLAGS.coordinator_address if 'coordinator_address' in FLAGS else None
  auto = FLAGS.multihost_auto if 'multihost_auto' in FLAGS else False
  explicit = coordinator is not None
  slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
  if not (explicit or auto or config.get('distributed') or slurm):
    return
  if jax.config.jax_platforms in (None, '', 'cpu') or 'cpu' in str(jax.config.jax_platforms):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU cross-process sums
  if explicit:
    jax.distributed.initialize(coordinator, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  else:
    jax.distributed.initialize()
  logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


# ============================================================================= helpers

class _QuietLibraries:
  """Drops INFO records from Orbax / grain / absl internals: they would bury the progress line."""
  NOISY = (os.sep + 'orbax' + os.sep, os.sep + 'grain' + os.sep, os.sep + 'etils' + os.sep)

  def filter(self, record):
    return record.levelno >= 30 or not any(n in record.pathname for n in self.NOISY)


def setup_runtime():
  """Quiet library logs; persistent XLA compilation cache (reruns and resumes skip compiles)."""
  import jax  # pylint: disable=import-outside-toplevel
  logging.get_absl_handler().addFilter(_QuietLibraries())
  build = os.environ.get('ATTNLAB_BUILD_DIR') or os.path.expanduser('~/.cache/attnlab')
  jax.config.update('jax_compilation_cache_dir', os.path.join(build, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 2.0)

class Preemption:
  """SIGTERM sets a flag; the loop saves at the next step boundary and exits 0."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handler)

  def close(self):
    signal.signal(signal.SIGTERM, self._previous)

  def _handler(self, signum, frame):
    del frame
    logging.warning('signal %d received: saving a checkpoint and exiting', signum)
    self.requested = True

  def any_process(self):
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_count() == 1:
      return self.requested
    import numpy as np  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def batch_hash(batch):
  h = hashlib.sha1()
  for k in sorted(batch):
    h.update(k.encode())
    h.update(batch[k].tobytes())
  return h.hexdigest()[:16]


def check_finite(pending, last_saved):
  """Raises NaNLossError at the first step whose loss or gradient norm is not finite."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  for step, m in pending:
    loss, gnorm = (float(x) for x in jax.device_get((m['loss'], m['grad_norm'])))
    if not (np.isfinite(loss) and np.isfinite(gnorm)):
      raise NaNLossError(
          f'loss={loss} grad_norm={gnorm} at step {step}: training diverged and was stopped. '
          f'The last good checkpoint is step {last_saved} (nothing non-finite was saved). '
          f'Try a lower --config.optim.learning_rate, longer --config.optim.warmup_steps, '
          f'or --config.optim.clip_norm=1.0.')


def agreed(flag):
  """Process 0's value of a host-side decision, so every process stops at the same step."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return bool(flag)
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(multihost_utils.broadcast_one_to_all(np.array(bool(flag))))


def resolve_config(config, tokenizer):
  """The config as trained: vocabulary size filled in from the tokenizer."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if not config.model.vocab_size:
      config.model.vocab_size = int(tokenizer.vocab_size)
  return config


# ============================================================================= eval

def run_validation(config, module, params, tokenizer, val_batches, step):
  """{'val_loss', 'val_accuracy', 'val_bleu'/'val_exact_match' if decoding is on; for multi30k
  also 'val_bleu_lit' (the literature's lowercased tokenized BLEU; val_bleu still picks `best`)}."""
  import jax  # pylint: disable=import-outside-toplevel
  from train import trainer  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    params = multihost_utils.process_allgather(params, tiled=True)
  out = trainer.eval_loss(module, params, val_batches, config)
  result = {'val_loss': out['loss'], 'val_accuracy': out['accuracy']}
  n = int(config.eval.get('bleu_sentences', 0) or 0)
  if n > 0:
    try:
      from train import evaluate  # pylint: disable=import-outside-toplevel
    except ImportError:
      evaluate = None
    if evaluate is not None and hasattr(evaluate, 'decode_and_score'):
      t0 = time.time()
      scores = evaluate.decode_and_score(
          config, module, params, tokenizer, config.data.eval_splits[0], max_sentences=n,
          decode=config.eval.get('train_decode') or config.eval.decode)
      for key in ('bleu', 'bleu_lit', 'chrf', 'exact_match'):
        if scores.get(key) is not None:
          result[f'val_{key}'] = float(scores[key])
      logging.info('step %d: decoded %d %s sentences in %.1fs', step, n,
                   config.data.eval_splits[0], time.time() - t0)
  return result


# ============================================================================= training

def train_and_evaluate(config, workdir, devices=None):
  """Builds everything from the config, restores the newest good checkpoint, trains.

  `devices` (default: all) is for tests that train in-process on part of the machine.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  import model  # pylint: disable=import-outside-toplevel
  from train import checkpointing, config_io, data, trainer  # pylint: disable=import-outside-toplevel
  from train import early_stopping, layout  # pylint: disable=import-outside-toplevel
  from train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel

  preemption = Preemption()
  pid, nproc = jax.process_index(), jax.process_count()

  # --- Config, tokenizer, model -------------------------------------------------------------
  data.build(config)                       # idempotent; usually done by train.data.prepare
  tokenizer = data.get_tokenizer(config)
  config = resolve_config(config, tokenizer)
  if pid == 0:
    os.makedirs(workdir, exist_ok=True)
    old = os.path.join(workdir, layout.CONFIG_FILE)
    if os.path.exists(old):
      changed = config_io.diff(config_io.load_config(workdir), config)
      if changed:
        logging.warning('resuming with a changed config:\n  %s', '\n  '.join(changed))
    config_io.save_config(config, workdir)
    tokenizer.save(os.path.join(workdir, 'tokenizer'))
  module = model.build_model(config.model)

  # --- Mesh, data, state --------------------------------------------------------------------
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  logging.info('mesh %s over %d devices (%s)', dict(mesh.shape), jax.device_count(),
               jax.devices()[0].device_kind)
  tx, _ = trainer.make_optimizer(config)
  train_iter = data.make_train_iterator(config, tokenizer, process_index=pid, process_count=nproc)
  start_state = train_iter.get_state()
  example = next(train_iter)               # shapes for init only; the iterator is rewound
  train_iter.set_state(start_state)
  state, shardings = trainer.create_train_state(module, tx, config, mesh, example)
  logging.info('model: %s parameters', f'{model.count_params(state.params):,}')
  if config.model.get('embed_init'):       # word2vec vectors for the token table(s); a resumed run
    from model import word2vec  # pylint: disable=import-outside-toplevel  # overwrites them below
    params = word2vec.init_embeddings_from(
        state.params, config.model.embed_init, std=config.model.d_model ** -0.5,
        tokenizer_dir=os.path.join(workdir, 'tokenizer'))
    state = state.replace(params=jax.device_put(params, shardings.params))
    logging.info('embeddings initialised from word2vec run %s', config.model.embed_init)

  ckpt = checkpointing.Checkpointer(workdir, config)
  restored, data_state = ckpt.restore_latest(state)
  if restored is not None:
    state = restored
    train_iter.set_state(data_state)
    logging.info('resumed from step %d', int(state.step))
  stopper = early_stopping.EarlyStopping(         # patience; history truncated to this step
      workdir, config.get('patience', 0), int(jax.device_get(state.step)), write=pid == 0)
  step_fn = trainer.jit_train_step(module, tx, config, mesh, shardings)

  val_split = config.data.eval_splits[0] if config.data.eval_splits else None
  val_batches = None
  writer = metrics_lib.Writer(workdir)
  meter = metrics_lib.Meter(config.total_steps, mesh.size,
                            jax.devices()[0].device_kind, config.model.dtype)
  hash_log = (open(os.path.join(workdir, f'batches-p{pid}.txt'), 'a')
              if config.get('log_batch_hashes') else None)

  # --- Loop ---------------------------------------------------------------------------------
  step = int(jax.device_get(state.step))
  last_saved = step if restored is not None else None
  pending = []        # (step, device metrics) not yet checked for NaN
  flops_cache = {}
  first = True

  def save(metrics=None, force=False):
    nonlocal last_saved
    check_finite(pending, last_saved)
    pending.clear()
    if ckpt.save(state, train_iter.get_state(), metrics=metrics, force=force):
      last_saved = int(jax.device_get(state.step))

  try:
    if agreed(stopper.stopped and step < config.total_steps):
      stopper.write_stopped(step)          # again, in case a kill came before it was written
      logging.warning('%s', stopper.resume_message(step))
      return 'stopped_early'
    stopper.clear_stale()
    while step < config.total_steps:
      if preemption.any_process():
        save(force=True)
        ckpt.wait()
        logging.warning('preempted at step %d; checkpoint saved, exiting with status 0', step)
        return 'preempted'
      batch = next(train_iter)
      if hash_log:
        hash_log.write(f'{step + 1} {batch_hash(batch)}\n')
        hash_log.flush()
      state, m = step_fn(state, mesh_lib.global_batch(batch, mesh))
      step += 1
      pending.append((step, m))
      if len(pending) > 2:
        # At most two steps in flight: a SIGTERM is then handled within ~2 steps, and the
        # host never races ahead of the device by a whole logging interval.
        jax.block_until_ready(pending[-3][1]['loss'])
      shape = tuple(batch['targets'].shape) + tuple(batch.get('inputs', np.zeros((0, 0))).shape)
      if shape not in flops_cache:
        flops_cache[shape] = metrics_lib.batch_flops(config.model, batch) * nproc
      meter.add(float(np.sum(batch['weights'])) * nproc, flops_cache[shape])
      if first:                            # leave the first step's compile out of the rates
        jax.block_until_ready(m['loss'])
        meter.reset(time.time())
        first = False

      is_last = step == config.total_steps
      is_eval = is_last or (config.eval_every and step % config.eval_every == 0)
      is_log = is_last or step % config.log_every == 0
      is_ckpt = is_last or is_eval or step % config.checkpoint_every == 0
      if is_log:
        values = jax.device_get(pending[-1][1])
        check_finite(pending, last_saved)
        pending.clear()
        rates = meter.rates(step)
        metrics_lib.log(metrics_lib.console_line(step, config.total_steps, values, rates))
        writer.scalars(step, {k: values[k] for k in ('loss', 'nll', 'accuracy', 'lr',
                                                     'grad_norm', 'param_norm')}, 'train')
        writer.scalars(step, rates, 'perf')
        meter.reset(time.time())
      eval_metrics, stop = None, False
      if is_eval and val_split:
        check_finite(pending, last_saved)
        pending.clear()
        if val_batches is None:
          n = int(config.eval.get('loss_sentences', 0) or 0) or None
          val_batches = data.make_eval_batches(config, tokenizer, val_split, max_examples=n)
        eval_metrics = run_validation(config, module, state.params, tokenizer, val_batches, step)
        metrics_lib.log(f'step {step} | ' + ' | '.join(
            f'{k} {v:.4f}' for k, v in eval_metrics.items()))
        writer.scalars(step, {k[4:]: v for k, v in eval_metrics.items()}, 'eval')
        writer.flush()
        meter.reset(time.time())           # validation time is not training throughput
        stop = agreed(stopper.update(step, eval_metrics, checkpointing._score(eval_metrics))
                      and not is_last)
      if is_ckpt:
        save(metrics=eval_metrics, force=is_last or is_eval)
      if stop:                             # patience ran out: this step's checkpoint is final
        ckpt.wait()
        stopper.write_stopped(step)
        logging.warning('%s', stopper.summary(step))
        return 'stopped_early'
    check_finite(pending, last_saved)
    ckpt.wait()
    return 'done'
  finally:
    preemption.close()
    ckpt.close()
    writer.close()
    if hasattr(train_iter, 'close'):
      train_iter.close()
    if hash_log:
      hash_log.close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.workdir is None:
    raise app.UsageError('--workdir is required')
  from train import config_io  # pylint: disable=import-outside-toplevel
  config = FLAGS.config
  try:
    config_io.validate(config)      # before anything is built or compiled
  except ValueError as e:
    sys.exit(f'error: {e}')
  setup_runtime()
  maybe_initialize_distributed(config)
  try:
    train_and_evaluate(config, FLAGS.workdir)
  except NaNLossError as e:
    logging.error('%s', e)
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)

r"""Trains word2vec (model/word2vec.py) on a text corpus; see configs/word2vec.py for commands.

  python -m train.word2vec --config=configs/word2vec.py[:ARG] --workdir=DIR [--config.KEY=V]

Reads top to bottom: corpus -> vocabulary -> per-epoch centre/context/noise chunks (NumPy,
vectorised; train/word2vec_data.py) -> jitted sparse-SGD calls (this module's sharded loop) ->
checkpoint per epoch -> vectors, WordSim / analogy. The host builds chunk n+1 while the device
(XLA runs asynchronously) trains on chunk n.
Writes DIR/config.json, DIR/vocab.json, DIR/embeddings.npy (input vectors), DIR/vectors.txt,
DIR/results.json, checkpoints under DIR/checkpoints/ (train/word2vec_io.py), TensorBoard under
DIR/tb/.
"""

from __future__ import annotations

import functools
import json
import time

from absl import flags, logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections as mlc
from ml_collections import config_flags

from model import word2vec as w2v
from train import checkpointing
from train import cli
from train import layout
from train import mesh as mesh_lib
from train import metrics
from train import word2vec_data, word2vec_io
from train import word_eval
from train.word2vec_data import Corpus


# ================================================================== the sharded loop
def make_train_chunk(objective: str, mesh: Mesh | None = None, axis: str = 'data'):
  """jit-compiled `(params, chunk, lr_S) -> (params, loss_S, pairs_S)` over S scanned steps.

  chunk: a batch dict {w [S, B], ctx [S, B, C], neg [S, B, K]} or a list of them (e.g. one per
  window size, each with its own C); scan step s applies the list's batches s in order, at
  learning rate lr_S[s]. B must divide over the mesh axis. Params are donated and replicated;
  the centre axis B is sharded over `axis`.
  """
  if objective not in w2v.OBJECTIVES:
    raise ValueError(f'objective={objective!r}: choose one of {w2v.OBJECTIVES}.')

  def scan_steps(params, chunk, lr_S, axis_name):
    def body(p, xs):
      batches, lr = xs
      loss = pairs = 0.0
      for batch in batches if isinstance(batches, (list, tuple)) else [batches]:
        p, l, n = w2v.sgd_step(p, batch, lr, objective, axis_name)
        loss, pairs = loss + l, pairs + n
      return p, (loss, pairs)

    params, (loss_S, pairs_S) = jax.lax.scan(body, params, (chunk, lr_S))
    return params, loss_S, pairs_S

  if mesh is None:
    fn = functools.partial(scan_steps, axis_name=None)
  else:
    # check_vma=False: all_gather's result is typed "varying" although every device receives
    # the same rows, so the replicas provably stay equal; the type checker cannot see that.
    fn = jax.shard_map(
      functools.partial(scan_steps, axis_name=axis),
      mesh=mesh,
      in_specs=(P(), P(None, axis), P()),
      out_specs=(P(), P(), P()),
      check_vma=False,
    )
  return jax.jit(fn, donate_argnums=(0,))


def data_mesh(num_devices: int | None = None) -> Mesh:
  """train/mesh.py's mesh over the first `num_devices` devices (all by default), every one on
  the `data` axis (fsdp = tensor = 1)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (None, 0, -1) else num_devices
  if n > len(devices):
    raise ValueError(
      f'asked for {n} devices but only {len(devices)} exist; on CPU set '
      f'XLA_FLAGS=--xla_force_host_platform_device_count={n}.'
    )
  return mesh_lib.make_mesh(mlc.ConfigDict({'data': n, 'fsdp': 1, 'tensor': 1}), devices[:n])


# ================================================================== training
def evaluate(config, corpus: Corpus, params) -> dict:
  """WordSim353 and Google analogy scores (word-level runs with eval.word_sets only)."""
  if corpus.kind != 'word' or not config.eval.word_sets:
    return {}
  data_dir = config.data.data_dir
  emb = np.asarray(params['input'], np.float32)
  return {
    **word_eval.wordsim(corpus.words, emb, data_dir=data_dir),
    **word_eval.analogy(corpus.words, emb, data_dir=data_dir),
  }


def _load_corpus(config) -> Corpus:
  """The config's corpus (word2vec_data.load_corpus), with its sizes logged."""
  t0 = time.time()
  corpus = word2vec_data.load_corpus(config)
  logging.info(
    'corpus: %d raw tokens, %d in vocabulary, vocabulary %d (%.1fs)',
    corpus.raw_words,
    corpus.ids.size,
    len(corpus.words),
    time.time() - t0,
  )
  return corpus


def _config_mesh(config) -> Mesh:
  """data_mesh over `config.num_devices`, checked to split `config.batch_size` evenly."""
  mesh = data_mesh(config.num_devices)
  if config.batch_size % mesh.size:
    raise ValueError(
      f'--config.batch_size={config.batch_size} must divide over {mesh.size} devices.'
    )
  return mesh


def _sum_pending(pending) -> tuple[float, float]:
  """(loss, pairs) summed over the device arrays of the calls not yet read back."""
  return sum(float(l.sum()) for l, _ in pending), sum(float(p.sum()) for _, p in pending)


def _log_progress(writer, corpus: Corpus, epoch: int, done: int, lr, loss_per_pair, elapsed):
  """TensorBoard scalars and one console line, `done` raw words into `epoch`."""
  writer.scalars(
    epoch * corpus.raw_words + done,
    {
      'loss_per_pair': loss_per_pair,
      'words_per_s': done / elapsed,
      'learning_rate': float(lr[-1]),
    },
    'train',
  )
  logging.info(
    'epoch %d %5.1f%%  loss/pair %.4f  lr %.5f  %.0f words/s',
    epoch + 1,
    100 * done / corpus.raw_words,
    loss_per_pair,
    lr[-1],
    done / elapsed,
  )


def _train_epoch(config, corpus: Corpus, epoch: int, chunks, step_fn, params, sharding, writer):
  """Runs `step_fn` on every chunk of one epoch; returns (params, the epoch's record)."""
  t_epoch = time.time()
  loss_acc, pair_acc, pending = 0.0, 0.0, []
  for call, (chunk, lr, done) in enumerate(chunks):
    chunk = jax.device_put(chunk, sharding)
    params, loss_S, pairs_S = step_fn(params, chunk, lr)
    pending.append((loss_S, pairs_S))
    if (call + 1) % config.log_every == 0:
      # Reading the loss waits for the device; doing it every log_every calls keeps it busy.
      loss, pairs = _sum_pending(pending)
      loss_acc += loss
      pair_acc += pairs
      pending = []
      elapsed = time.time() - t_epoch
      _log_progress(writer, corpus, epoch, done, lr, loss_acc / max(pair_acc, 1), elapsed)
  loss, pairs = _sum_pending(pending)
  loss_acc += loss
  pair_acc += pairs
  seconds = time.time() - t_epoch
  record = {
    'epoch': epoch + 1,
    'loss_per_pair': loss_acc / max(pair_acc, 1),
    'seconds': seconds,
    'words_per_s': corpus.raw_words / seconds,
  }
  return params, record


def _results(config, corpus: Corpus, params, history, devices: int, cpu_start: float) -> dict:
  """The run's results: the last epoch's scores (evaluated now if no epoch ran), the run's
  sizes, its training time and throughput, and every epoch's record."""
  last = {
    k: v
    for k, v in (history[-1] if history else evaluate(config, corpus, params)).items()
    if k not in ('seconds', 'words_per_s')
  }  # per-epoch timing stays in history
  train_time = sum((r['seconds'] for r in history), 0.0)
  return {
    **last,
    'objective': config.model.objective,
    'tokens': corpus.kind,
    'vocab_size': len(corpus.words),
    'raw_words_per_epoch': corpus.raw_words,
    'epochs': config.optim.epochs,
    'devices': devices,
    'train_seconds': train_time,
    'train_cpu_seconds': time.process_time() - cpu_start,
    'words_per_s': corpus.raw_words * len(history) / train_time if train_time else None,
    'history': history,
  }


def validate(config) -> None:
  """The config's choices, checked before any corpus is read or file written (cli.UsageError)."""
  choices = (
    ('model.objective', config.model.objective, w2v.OBJECTIVES),
    ('model.subsampling', config.model.subsampling, w2v.SUBSAMPLING),
    ('data.corpus', config.data.corpus, word2vec_data.CORPORA),
    ('data.tokens', config.data.tokens, word2vec_data.TOKENS),
  )
  for key, value, valid in choices:
    if value not in valid:
      raise cli.UsageError(f'--config.{key}={value!r} is not valid; choose one of: {valid}')
  sizes = (
    ('batch_size', config.batch_size),
    ('steps_per_call', config.steps_per_call),
    ('model.dim', config.model.dim),
    ('model.window', config.model.window),
    ('optim.epochs', config.optim.epochs),
  )
  for key, value in sizes:
    if not isinstance(value, int) or value < 1:
      raise cli.UsageError(f'--config.{key}={value!r} must be a positive integer')


def train(config, workdir: str) -> dict:
  """Trains (resuming from the last finished epoch in workdir) and returns the results dict.
  One writer per workdir (layout.WorkdirLock, as train.main)."""
  validate(config)
  with layout.WorkdirLock(workdir):
    return _train(config, workdir)


def _train(config, workdir: str) -> dict:
  m, epochs = config.model, config.optim.epochs
  word2vec_io.write_run_config(config, workdir)
  corpus = _load_corpus(config)
  keep_prob = w2v.keep_probability(corpus.counts, m.sample, m.subsampling)
  table = w2v.noise_table(w2v.noise_distribution(corpus.counts, m.noise_power))

  mesh = _config_mesh(config)
  step_fn = make_train_chunk(m.objective, mesh)
  batch_sharding = NamedSharding(mesh, P(None, 'data'))
  replicated = NamedSharding(mesh, P())
  params = jax.device_put(
    w2v.init_params(jax.random.key(config.seed), len(corpus.words), m.dim), replicated
  )
  ckpt = checkpointing.Checkpointer(workdir, config)
  params, start_epoch = word2vec_io.resume(ckpt, params)
  writer = metrics.Writer(workdir)
  history = []
  cpu_start = time.process_time()  # all threads: a load-independent cost, unlike wall time
  for epoch in range(start_epoch, epochs):
    chunks = word2vec_data.epoch_chunks(corpus, config, epoch, table, keep_prob)
    params, record = _train_epoch(
      config, corpus, epoch, chunks, step_fn, params, batch_sharding, writer
    )
    if config.eval.every_epoch or epoch + 1 == epochs:
      record.update(evaluate(config, corpus, params))
    logging.info('epoch %d done: %s', epoch + 1, json.dumps(record))
    writer.scalars(epoch + 1, {k: v for k, v in record.items() if isinstance(v, float)}, 'epoch')
    history.append(record)
    ckpt.save(word2vec_io.as_state(params, epoch + 1), {'epoch': epoch + 1}, force=True)
  ckpt.wait()
  ckpt.close()
  writer.close()
  results = _results(config, corpus, params, history, mesh.size, cpu_start)
  word2vec_io.save_outputs(workdir, corpus, params, results, config.eval.export)
  return results


# ================================================================== CLI
def main(argv):
  del argv
  results = train(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps({k: v for k, v in results.items() if k != 'history'}, indent=2))


def _define_flags():
  config_flags.DEFINE_config_file('config', None, 'configs/word2vec.py[:arg]')
  flags.DEFINE_string('workdir', None, 'output directory (resumes if it has checkpoints)')


if __name__ == '__main__':
  cli.run(main, define_flags=_define_flags, required=('config', 'workdir'), huge_pages=True)

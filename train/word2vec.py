r"""Trains word2vec (model/word2vec.py) on a text corpus; see configs/word2vec.py for commands.

  python -m train.word2vec --config=configs/word2vec.py[:ARG] --workdir=DIR [--config.KEY=V]

Reads top to bottom: corpus -> vocabulary -> per-epoch centre/context/noise chunks (NumPy,
vectorised) -> jitted sparse-SGD calls -> checkpoint per epoch -> vectors, WordSim / analogy.
The host builds chunk n+1 while the device (XLA runs asynchronously) trains on chunk n.
Writes DIR/config.json, DIR/vocab.json, DIR/embeddings.npy (input vectors), DIR/vectors.txt,
DIR/results.json, checkpoints under DIR/checkpoints/, TensorBoard under DIR/tb/.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import os
import time

from absl import flags, logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections as mlc
from ml_collections import config_flags

from model import word2vec as w2v
from train import checkpointing
from train import mesh as mesh_lib
from train import metrics
from train.data import paths

TOKENS = ('word', 'sentencepiece')
CORPORA = ('text', 'multi30k', 'file')


# ================================================================== corpus
def _data_fn(name):
  """train.data.<name> (imported lazily: word-level runs on a plain file need no tfds)."""
  import train.data as data  # pylint: disable=import-outside-toplevel

  return getattr(data, name)


def load_config_file(spec: str):
  """`path.py[:arg]` -> that file's get_config(arg) (used to reuse a Transformer's tokenizer)."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_tok_config', path)
  if module_spec is None or not os.path.exists(path):
    raise FileNotFoundError(f'tokenizer_config {path!r} not found (e.g. configs/multi30k.py).')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def corpus_lines(config):
  """The raw text lines the config names (one sentence / paragraph each)."""
  d = config.data
  limit = d.max_lines or None
  if d.corpus == 'text':
    return _data_fn('load_text_lines')(d.data_dir, limit)
  if d.corpus == 'multi30k':
    examples = _data_fn('load_examples')(load_config_file(d.tokenizer_config), 'train')
    lines = [e['source'] for e in examples] + [e['target'] for e in examples]
    return lines[:limit]
  if d.corpus == 'file':
    if not d.path or not os.path.exists(d.path):
      raise FileNotFoundError(f'--config.data.path={d.path!r}: no such file (corpus=file).')
    opener = gzip.open if d.path.endswith('.gz') else open
    with opener(d.path, 'rt', encoding='utf-8') as f:
      lines = [line.strip() for line in f if line.strip()]
    return lines[:limit]
  raise ValueError(f'--config.data.corpus={d.corpus!r}: choose one of {CORPORA}.')


@dataclasses.dataclass
class Corpus:
  """An encoded corpus: in-vocabulary ids in order, which line each came from, raw counts."""

  words: list[str]  # id -> word (word level) or piece (sentencepiece)
  counts: np.ndarray  # [V] int64 occurrences
  ids: np.ndarray  # [N] int32 in-vocabulary tokens, corpus order
  line: np.ndarray  # [N] int32 line index of each token (windows never cross lines)
  raw_pos: np.ndarray  # [N] int64 index in the raw token stream (drives the lr schedule)
  raw_words: int  # tokens per epoch before dropping out-of-vocabulary words
  kind: str  # word | sentencepiece


def build_word_corpus(lines, min_count: int) -> Corpus:
  """Whitespace words; the vocabulary is every word seen >= min_count times, most frequent first."""
  tokenized = [line.split() for line in lines]
  counter = collections.Counter()
  for toks in tokenized:
    counter.update(toks)
  words = [w for w, n in counter.most_common() if n >= min_count]
  if not words:
    raise ValueError(f'no word occurs min_count={min_count} times; lower --config.data.min_count.')
  index = {w: i for i, w in enumerate(words)}
  lengths = np.fromiter((len(t) for t in tokenized), np.int64, len(tokenized))
  raw_ids = np.fromiter(
    (index.get(w, -1) for t in tokenized for w in t), np.int32, int(lengths.sum())
  )
  return _finish(words, raw_ids, lengths, 'word')


def build_piece_corpus(lines, tokenizer) -> Corpus:
  """Sentencepiece ids: row i of the trained matrix is the Transformer's token id i."""
  encoded = tokenizer.encode_batch(list(lines))
  lengths = np.asarray([len(e) for e in encoded], np.int64)
  raw_ids = np.fromiter((i for e in encoded for i in e), np.int32, int(lengths.sum()))
  words = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]  # ids are the contract
  return _finish(words, raw_ids, lengths, 'sentencepiece')


def _finish(words, raw_ids, lengths, kind) -> Corpus:
  line = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
  keep = raw_ids >= 0
  ids = raw_ids[keep]
  counts = np.bincount(ids, minlength=len(words)).astype(np.int64)
  return Corpus(words, counts, ids, line[keep], np.flatnonzero(keep), int(raw_ids.size), kind)


def load_corpus(config) -> Corpus:
  """Reads, tokenises and caches (under $ATTNLAB_BUILD_DIR/word2vec/) the config's corpus."""
  d = config.data
  if d.tokens not in TOKENS:
    raise ValueError(f'--config.data.tokens={d.tokens!r}: choose one of {TOKENS}.')
  tokenizer = None
  if d.tokens == 'sentencepiece':
    tokenizer = _data_fn('get_tokenizer')(load_config_file(d.tokenizer_config))
  key = json.dumps(
    [
      d.corpus,
      d.path,
      d.max_lines,
      str(paths.data_root(d.data_dir)),
      d.tokens,
      d.min_count,
      d.tokenizer_config,
    ],
    sort_keys=True,
  )
  root = paths.build_dir()
  cache = root / 'word2vec' / (hashlib.sha1(key.encode()).hexdigest()[:16] + '.npz')
  if d.cache and cache.exists() and tokenizer is None:
    z = np.load(cache, allow_pickle=False)
    return Corpus(
      list(z['words']),
      z['counts'],
      z['ids'],
      z['line'],
      z['raw_pos'],
      int(z['raw_words']),
      str(z['kind']),
    )
  lines = corpus_lines(config)
  corpus = (
    build_word_corpus(lines, d.min_count)
    if tokenizer is None
    else build_piece_corpus(lines, tokenizer)
  )
  if d.cache and tokenizer is None:
    buf = io.BytesIO()
    np.savez(
      buf,
      words=np.asarray(corpus.words),
      counts=corpus.counts,
      ids=corpus.ids,
      line=corpus.line,
      raw_pos=corpus.raw_pos,
      raw_words=corpus.raw_words,
      kind=corpus.kind,
    )
    paths.write_atomic(cache, buf.getvalue())
  return corpus


# ================================================================== chunks of training work
def window_contexts(ids, line, centres, b, empty):
  """[n, 2b] ids of the b nearest words on each side of `centres` (positions in `ids`, -1 =
  padding), `empty` where a slot falls off the corpus, across a line boundary, or on padding."""
  offsets = np.concatenate([np.arange(-b, 0), np.arange(1, b + 1)])
  live = centres >= 0
  pos = np.clip(centres[:, None] + offsets[None, :], 0, len(ids) - 1)
  here = np.clip(centres, 0, len(ids) - 1)
  valid = live[:, None] & (line[pos] == line[here][:, None]) & (pos == centres[:, None] + offsets)
  return np.where(valid, ids[pos], empty).astype(np.int32)


def epoch_chunks(corpus: Corpus, config, epoch: int, table: np.ndarray, keep_prob: np.ndarray):
  """Yields (chunk, lr [S] float32, raw words done) for one epoch.

  chunk is a list over window sizes b = 1..window of {w [S, B], ctx [S, B, 2b], neg [S, B, K]}.
  Lanes: like word2vec.c's threads, each of the B batch slots walks its own contiguous slice of
  the call's S * window * B centres, so one SGD step's B centres lie far apart in the corpus. With
  consecutive centres instead, a degenerate line (en_15m has 1,418-token lines that are 40% one
  word) puts ~100 copies of a word into one step; their summed updates overshoot and skip-gram
  diverges (loss/pair > 100 within the first epoch at lr 0.025).
  Dynamic window without padding: each scan step takes `window` blocks of B centres and gives
  them the sizes 1..window in a random order, so every centre's b is uniform in 1..window
  (word2vec.c's distribution) while each block's context array is dense.
  """
  m, o = config.model, config.optim
  rng = np.random.default_rng([config.seed, epoch])
  vocab, window = len(corpus.words), m.window
  kept = np.flatnonzero(rng.random(corpus.ids.size) < keep_prob[corpus.ids])
  ids, line, raw_pos = corpus.ids[kept], corpus.line[kept], corpus.raw_pos[kept]
  steps, batch = config.steps_per_call, config.batch_size
  per_call = steps * window * batch
  total_raw = corpus.raw_words * o.epochs
  for start in range(0, len(ids), per_call):
    centres = np.arange(start, start + per_call)
    centres[centres >= len(ids)] = -1  # padding centres: no pairs, no update
    blocks = centres.reshape(batch, steps, window).transpose(1, 2, 0)  # [S, window, B] lanes
    order = np.argsort(rng.random((steps, window)), axis=1)  # block order[s, b-1] gets size b
    chunk = []
    for b in range(1, window + 1):
      c = np.take_along_axis(blocks, order[:, b - 1, None, None], axis=1).reshape(-1)
      chunk.append(
        {
          'w': np.where(c >= 0, ids[np.maximum(c, 0)], vocab)
          .astype(np.int32)
          .reshape(steps, batch),
          'ctx': window_contexts(ids, line, c, b, vocab).reshape(steps, batch, 2 * b),
          'neg': table[rng.integers(0, len(table), size=(steps, batch, m.negatives))],
        }
      )
    last = np.minimum(start + (np.arange(1, steps + 1) * window * batch), len(ids)) - 1
    progress = (epoch * corpus.raw_words + raw_pos[last]) / total_raw
    lr = o.learning_rate - (o.learning_rate - o.min_learning_rate) * progress
    done = corpus.raw_words if start + per_call >= len(ids) else int(raw_pos[last[-1]])
    yield chunk, lr.astype(np.float32), done


# ================================================================== checkpoints, outputs
def _as_state(params, epoch):
  """The trainer's TrainState shape, so train/checkpointing.py saves word2vec runs too:
  step = finished epochs, no optimizer state (plain SGD)."""
  from train import trainer  # pylint: disable=import-outside-toplevel

  return trainer.TrainState(step=jnp.asarray(epoch, jnp.int32), params=params, opt_state={})


def save_outputs(workdir, corpus: Corpus, params, results, export: bool):
  """embeddings.npy (input vectors), vocab.json, vocab_kind.txt, results.json, vectors.txt."""
  from train import word_eval  # pylint: disable=import-outside-toplevel

  emb = np.asarray(params['input'], np.float32)
  buf = io.BytesIO()
  np.save(buf, emb)
  paths.write_atomic(os.path.join(workdir, 'embeddings.npy'), buf.getvalue())
  # JSON, not TSV: sentencepiece pieces may be a tab or a newline.
  vocab = {'words': list(corpus.words), 'counts': corpus.counts.tolist()}
  paths.write_atomic(
    os.path.join(workdir, 'vocab.json'), json.dumps(vocab, ensure_ascii=False).encode()
  )
  paths.write_atomic(os.path.join(workdir, 'vocab_kind.txt'), corpus.kind.encode())
  paths.write_atomic(os.path.join(workdir, 'results.json'), json.dumps(results, indent=2).encode())
  if export:
    words = [word_eval.export_safe(w) for w in corpus.words]
    word_eval.save_word2vec_format(os.path.join(workdir, 'vectors.txt'), words, emb)


def evaluate(config, corpus: Corpus, params) -> dict:
  """WordSim353 and Google analogy scores (word-level runs with eval.word_sets only)."""
  from train import word_eval  # pylint: disable=import-outside-toplevel

  if corpus.kind != 'word' or not config.eval.word_sets:
    return {}
  data_dir = config.data.data_dir
  emb = np.asarray(params['input'], np.float32)
  return {
    **word_eval.wordsim(corpus.words, emb, data_dir=data_dir),
    **word_eval.analogy(corpus.words, emb, data_dir=data_dir),
  }


# ================================================================== the loop
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


def train(config, workdir: str) -> dict:
  """Trains (resuming from the last finished epoch in workdir) and returns the results dict."""
  m, o = config.model, config.optim
  os.makedirs(workdir, exist_ok=True)
  paths.write_atomic(
    os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2).encode()
  )
  if config.data.tokens == 'sentencepiece':  # saved so embed_init can check it is the same one
    _data_fn('get_tokenizer')(load_config_file(config.data.tokenizer_config)).save(
      os.path.join(workdir, 'tokenizer')
    )
  t0 = time.time()
  corpus = load_corpus(config)
  vocab = len(corpus.words)
  logging.info(
    'corpus: %d raw tokens, %d in vocabulary, vocabulary %d (%.1fs)',
    corpus.raw_words,
    corpus.ids.size,
    vocab,
    time.time() - t0,
  )
  keep_prob = w2v.keep_probability(corpus.counts, m.sample, m.subsampling)
  table = w2v.noise_table(w2v.noise_distribution(corpus.counts, m.noise_power))

  mesh = data_mesh(config.num_devices)
  if config.batch_size % mesh.size:
    raise ValueError(
      f'--config.batch_size={config.batch_size} must divide over {mesh.size} devices.'
    )
  step_fn = make_train_chunk(m.objective, mesh)
  batch_sharding = NamedSharding(mesh, P(None, 'data'))
  replicated = NamedSharding(mesh, P())

  params = jax.device_put(w2v.init_params(jax.random.key(config.seed), vocab, m.dim), replicated)
  ckpt = checkpointing.Checkpointer(workdir, config)
  restored, _ = ckpt.restore_latest(_as_state(params, 0))
  start_epoch = 0
  if restored is not None:
    params, start_epoch = restored.params, int(restored.step)
    logging.info('resumed after epoch %d', start_epoch)
  writer = metrics.Writer(workdir)
  history = []
  train_time, words_done = 0.0, 0
  cpu_start = time.process_time()  # all threads: a load-independent cost, unlike wall time
  for epoch in range(start_epoch, o.epochs):
    t_epoch = time.time()
    loss_acc, pair_acc, pending = 0.0, 0.0, []
    for call, (chunk, lr, done) in enumerate(epoch_chunks(corpus, config, epoch, table, keep_prob)):
      chunk = jax.device_put(chunk, batch_sharding)
      params, loss_S, pairs_S = step_fn(params, chunk, lr)
      pending.append((loss_S, pairs_S))
      if (call + 1) % config.log_every == 0:
        # Reading the loss waits for the device; doing it every log_every calls keeps it busy.
        loss_acc += sum(float(l.sum()) for l, _ in pending)
        pair_acc += sum(float(p.sum()) for _, p in pending)
        pending = []
        elapsed = time.time() - t_epoch
        writer.scalars(
          epoch * corpus.raw_words + done,
          {
            'loss_per_pair': loss_acc / max(pair_acc, 1),
            'words_per_s': done / elapsed,
            'learning_rate': float(lr[-1]),
          },
          'train',
        )
        logging.info(
          'epoch %d %5.1f%%  loss/pair %.4f  lr %.5f  %.0f words/s',
          epoch + 1,
          100 * done / corpus.raw_words,
          loss_acc / max(pair_acc, 1),
          lr[-1],
          done / elapsed,
        )
    loss_acc += sum(float(l.sum()) for l, _ in pending)
    pair_acc += sum(float(p.sum()) for _, p in pending)
    seconds = time.time() - t_epoch
    train_time += seconds
    words_done += corpus.raw_words
    record = {
      'epoch': epoch + 1,
      'loss_per_pair': loss_acc / max(pair_acc, 1),
      'seconds': seconds,
      'words_per_s': corpus.raw_words / seconds,
    }
    if config.eval.every_epoch or epoch + 1 == o.epochs:
      record.update(evaluate(config, corpus, params))
    logging.info('epoch %d done: %s', epoch + 1, json.dumps(record))
    writer.scalars(epoch + 1, {k: v for k, v in record.items() if isinstance(v, float)}, 'epoch')
    history.append(record)
    ckpt.save(_as_state(params, epoch + 1), {'epoch': epoch + 1}, force=True)
  ckpt.wait()
  ckpt.close()
  writer.close()
  last = {
    k: v
    for k, v in (history[-1] if history else evaluate(config, corpus, params)).items()
    if k not in ('seconds', 'words_per_s')
  }  # per-epoch timing stays in history
  results = {
    **last,
    'objective': m.objective,
    'tokens': corpus.kind,
    'vocab_size': vocab,
    'raw_words_per_epoch': corpus.raw_words,
    'epochs': o.epochs,
    'devices': mesh.size,
    'train_seconds': train_time,
    'train_cpu_seconds': time.process_time() - cpu_start,
    'words_per_s': words_done / train_time if train_time else None,
    'history': history,
  }
  save_outputs(workdir, corpus, params, results, config.eval.export)
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
  from train import cli  # pylint: disable=import-outside-toplevel

  cli.run(main, define_flags=_define_flags, required=('config', 'workdir'))

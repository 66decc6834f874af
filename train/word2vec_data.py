"""word2vec's input pipeline (NumPy, vectorised): corpus -> vocabulary -> per-epoch chunks of
centre / context / noise ids for train/word2vec.py's jitted sparse-SGD calls. Encoded corpora
are cached under $ATTNLAB_BUILD_DIR/word2vec/.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import io
import json
import os

import numpy as np

from train import config_file
from train.data import paths

TOKENS = ('word', 'sentencepiece')
CORPORA = ('text', 'multi30k', 'file')


# ================================================================== corpus
def _data_fn(name):
  """train.data.<name> (imported lazily: word-level runs on a plain file need no tfds)."""
  import train.data as data  # pylint: disable=import-outside-toplevel

  return getattr(data, name)


def sentencepiece_tokenizer(config):
  """The tokenizer of `config.data.tokenizer_config` (a Transformer config: its own pieces)."""
  return _data_fn('get_tokenizer')(
    config_file.get_config(config.data.tokenizer_config, '--config.data.tokenizer_config')
  )


def corpus_lines(config):
  """The raw text lines the config names (one sentence / paragraph each)."""
  d = config.data
  limit = d.max_lines or None
  if d.corpus == 'text':
    return _data_fn('load_text_lines')(d.data_dir, limit)
  if d.corpus == 'multi30k':
    examples = _data_fn('load_examples')(
      config_file.get_config(d.tokenizer_config, '--config.data.tokenizer_config'), 'train'
    )
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
    tokenizer = sentencepiece_tokenizer(config)
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

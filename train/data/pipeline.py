"""Training and evaluation batches in the contracts.md layout, from a config and a tokenizer.

Training (per process): a contiguous slice of the train split -> tokenized, length-limited and
laid out once up front (small splits) or per example (the lazily read LM corpus) -> a new
seeded order every epoch -> length-bucketed batches or first-fit packing -> background-thread
prefetch. The iterator's state is a small JSON-able dict; restoring it replays exactly the
batches an uninterrupted run would produce.
"""

from __future__ import annotations

import atexit
import threading
import weakref

from absl import logging
import grain
import numpy as np

from configs import common
from train.data import batching
from train.data import datasets
from train.data.tokenizer import BOS, EOS

POLICIES = ('filter', 'truncate')
BATCHINGS = ('bucket', 'pack')
TOKENIZE_CHUNK = 10_000
_OPEN_ITERATORS = weakref.WeakSet()  # closed at exit, before grain's prefetch threads lose globals


def layout_of(config) -> str:
  """lm for the text corpus, else the model's arch decides (rnn reads the encoder-decoder
  layout)."""
  if common.opt(datasets.data_config(config), 'name') == 'text':
    return 'lm'
  model = config.get('model', None) if 'data' in config else None
  arch = common.opt(model, 'arch', section='model')
  return 'decoder_only' if arch == 'decoder_only' else 'encoder_decoder'


def _choice(d, key, valid):
  value = common.opt(d, key)
  if value not in valid:
    raise ValueError(f'Unknown config.data.{key} {value!r}; valid choices: {list(valid)}.')
  return value


class Featurizer:
  """Example dict -> feature dict (numpy) in a layout, or None when the length filter drops it.

  Drops and truncations are counted (thread-safe) and logged at 1, 10, 100, ... occurrences.
  """

  def __init__(
    self,
    tokenizer,
    layout: str,
    max_src_len: int,
    max_tgt_len: int,
    policy: str | None,
    eval_fields: bool = False,
  ):
    self.tokenizer, self.layout = tokenizer, layout
    self.max_src_len, self.max_tgt_len, self.policy = max_src_len, max_tgt_len, policy
    self.eval_fields = eval_fields
    self.counts = {'seen': 0, 'filtered': 0, 'truncated': 0}
    self._lock = threading.Lock()

  def _count(self, what: str) -> None:
    with self._lock:
      self.counts[what] += 1
      n = self.counts[what]
    if what != 'seen' and str(n).strip('0') == '1':  # 1, 10, 100, ...
      logging.info(
        'Length policy %r: %s %d of %d examples so far (max_src_len=%d, max_tgt_len=%d).',
        self.policy,
        what,
        n,
        self.counts['seen'],
        self.max_src_len,
        self.max_tgt_len,
      )

  def _limit(self, src: list[int], tgt: list[int]):
    """Applies the length policy; lengths count the EOS each side gets."""
    too_long = (self.layout != 'lm' and len(src) + 1 > self.max_src_len) or (
      len(tgt) + 1 > self.max_tgt_len
    )
    if not too_long or self.policy is None:
      return src, tgt
    if self.policy == 'filter':
      self._count('filtered')
      return None
    self._count('truncated')
    return src[: self.max_src_len - 1], tgt[: self.max_tgt_len - 1]

  def tokens(self, ex: dict) -> tuple[list[int], list[int]]:
    src = self.tokenizer.encode(ex['source'], side='source') if self.layout != 'lm' else []
    return src, self.tokenizer.encode(ex['target'], side='target')

  def from_tokens(self, src: list[int], tgt: list[int], ex: dict) -> dict | None:
    self._count('seen')
    limited = self._limit(list(src), list(tgt))
    if limited is None:
      return None
    return layout_features(self.layout, *limited, ex, eval_fields=self.eval_fields)

  def __call__(self, ex: dict) -> dict | None:
    return self.from_tokens(*self.tokens(ex), ex)


def tokenize_all(tokenizer, examples, layout: str):
  """(source ids, target ids) lists for a sequence of examples, encoded in large batches."""
  src, tgt = [], []
  for start in range(0, len(examples), TOKENIZE_CHUNK):
    chunk = examples[start : start + TOKENIZE_CHUNK]
    tgt.extend(tokenizer.encode_batch([ex['target'] for ex in chunk], side='target'))
    if layout == 'lm':
      src.extend([] for _ in chunk)
    else:
      src.extend(tokenizer.encode_batch([ex['source'] for ex in chunk], side='source'))
  return src, tgt


def layout_features(
  layout: str, src: list[int], tgt: list[int], ex: dict, eval_fields: bool = False
) -> dict:
  """The per-example arrays of contracts.md "Batches" (before padding)."""
  prompt, y = src + [EOS], tgt + [EOS]
  if layout == 'encoder_decoder':
    out = {'inputs': prompt, 'decoder_inputs': [BOS] + tgt, 'targets': y, 'weights': [1.0] * len(y)}
  elif layout == 'decoder_only':
    x = prompt + y
    out = {
      'decoder_inputs': [BOS] + x[:-1],
      'targets': x,
      'weights': [0.0] * len(prompt) + [1.0] * len(y),
    }
    if eval_fields:
      out['inputs'] = prompt
  else:
    out = {'decoder_inputs': [BOS] + y[:-1], 'targets': y, 'weights': [1.0] * len(y)}
  out = {k: np.asarray(v, np.float32 if k == 'weights' else np.int32) for k, v in out.items()}
  if eval_fields:
    out['index'] = np.int32(ex['index'])
    if 'length' in ex:
      out['length'] = np.int32(ex['length'])
  return out


def boundaries_for(d, max_src_len: int, max_tgt_len: int, layout: str) -> list[int]:
  """Padded widths: the configured boundaries below the longest allowed sequence, plus it."""
  bounds = sorted(int(b) for b in common.opt(d, 'bucket_boundaries'))
  longest = {'decoder_only': max_src_len + max_tgt_len, 'lm': max_tgt_len}.get(
    layout, max(max_src_len, max_tgt_len)
  )
  return [b for b in bounds if b < longest] + [longest]


def settings(config) -> dict:
  d = datasets.data_config(config)
  return dict(
    layout=layout_of(config),
    max_src_len=int(common.opt(d, 'max_src_len')),
    max_tgt_len=int(common.opt(d, 'max_tgt_len')),
    policy=_choice(d, 'length_policy', POLICIES),
    batching=_choice(d, 'batching', BATCHINGS),
    packed_len=int(common.opt(d, 'packed_len')),
    worker_count=int(common.opt(d, 'worker_count')),
    prefetch=int(common.opt(d, 'prefetch')),
  )


class TrainIterator:
  """Endless iterator of per-process training batches with a JSON-able, restorable state."""

  def __init__(self, dataset: grain.IterDataset, featurizer: Featurizer, rows: int):
    self._iter = dataset.__iter__()
    self._featurizer, self.rows = featurizer, rows
    _OPEN_ITERATORS.add(self)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._iter)

  def get_state(self) -> dict:
    return self._iter.get_state()

  def set_state(self, state: dict) -> None:
    self._iter.set_state(state)

  def close(self) -> None:
    """Stops the prefetch thread (also done at garbage collection and at exit)."""
    self._iter.close()
    # grain's prefetch close() is not idempotent: a second call from __del__ during interpreter
    # teardown prints an AttributeError. The iterator is closed now, so make later calls no-ops.
    self._iter.close = lambda: None

  @property
  def stats(self) -> dict:
    """Examples seen / filtered / truncated by the length policy (this process): one pass over
    the split for small splits (featurized up front), running counts for lazily read ones."""
    return dict(self._featurizer.counts)


@atexit.register
def _close_open_iterators():
  for it in list(_OPEN_ITERATORS):
    it.close()


def _source(config, featurizer, process_index: int, process_count: int):
  """(examples in this process's shard, index -> features or None, shuffle block size).

  Each process owns a contiguous slice of the split, so a lazily read split stays sequential."""
  records = datasets.records(config, 'train')
  n = len(records)
  lo, hi = n * process_index // process_count, n * (process_index + 1) // process_count
  if isinstance(records, tuple):  # small split: featurize once (tokenizing in large batches)
    examples = records[lo:hi]
    src, tgt = tokenize_all(featurizer.tokenizer, examples, featurizer.layout)
    feats = [featurizer.from_tokens(a, b, ex) for a, b, ex in zip(src, tgt, examples)]
    c = featurizer.counts
    logging.info(
      'Training examples (process %d/%d): %d; length policy %r (max_src_len=%d, '
      'max_tgt_len=%d) filtered %d, truncated %d.',
      process_index,
      process_count,
      c['seen'],
      featurizer.policy,
      featurizer.max_src_len,
      featurizer.max_tgt_len,
      c['filtered'],
      c['truncated'],
    )
    return len(feats), feats.__getitem__, None
  return hi - lo, lambda i: featurizer(records[lo + i]), records.BLOCK


def _train_dataset(config, tokenizer, process_index: int, process_count: int):
  s = settings(config)
  d = datasets.data_config(config)
  batch_size = int(common.opt(config, 'batch_size', section=''))
  if batch_size % process_count:
    raise ValueError(f'batch_size {batch_size} is not divisible by the {process_count} processes.')
  rows = batch_size // process_count
  seed = int(common.opt(config, 'seed', section='')) % 2**32
  featurizer = Featurizer(tokenizer, s['layout'], s['max_src_len'], s['max_tgt_len'], s['policy'])
  num, featurize, block = _source(config, featurizer, process_index, process_count)
  ds = batching.ShuffledSource(num, featurize, seed, block)
  if s['batching'] == 'pack':
    length = s['packed_len']
    longest = (
      s['max_src_len'] + s['max_tgt_len']
      if s['layout'] == 'decoder_only'
      else max(s['max_src_len'], s['max_tgt_len'])
    )
    if length < longest:
      raise ValueError(
        f'config.data.packed_len={length} is shorter than the longest example '
        f'({longest} tokens from max_src_len / max_tgt_len); raise packed_len.'
      )
    ds = batching.PackDataset(ds, rows, length)
  else:
    bounds = boundaries_for(d, s['max_src_len'], s['max_tgt_len'], s['layout'])
    ds = batching.BucketBatchDataset(ds, rows, bounds, seed)
  if s['worker_count'] > 0:
    logging.warning(
      'config.data.worker_count=%d ignored: batches are built in one background '
      'thread (a few ms per batch), which grain worker processes would not speed '
      'up.',
      s['worker_count'],
    )
  if s['prefetch'] > 0:  # overlap host batching with the device step
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=s['prefetch'])
  return ds, featurizer, rows


def make_train_iterator(
  config, tokenizer, *, process_index: int = 0, process_count: int = 1
) -> TrainIterator:
  """Endless per-process training batches of `batch_size // process_count` rows."""
  ds, featurizer, rows = _train_dataset(config, tokenizer, process_index, process_count)
  return TrainIterator(ds, featurizer, rows)


def make_eval_batches(
  config,
  tokenizer,
  split: str,
  *,
  batch_size: int | None = None,
  max_examples: int | None = None,
  process_index: int = 0,
  process_count: int = 1,
) -> list[dict]:
  """The split's first `max_examples` examples (all by default) exactly once, sorted by length
  (ties by index) to limit padding; padding rows have index -1. Nothing is filtered; only the
  LM layout cuts lines to max_tgt_len. With process_count > 1, each process gets its slice of
  every global batch's rows."""
  s = settings(config)
  examples = datasets.load_examples(config, split)
  if max_examples is not None:
    examples = examples[:max_examples]
  if batch_size is None:
    batch_size = int(common.opt(config.get('eval', None), 'batch_size', section='eval'))
  if batch_size % process_count:
    raise ValueError(f'eval batch size {batch_size} is not divisible by {process_count} processes.')
  policy = 'truncate' if s['layout'] == 'lm' else None
  featurizer = Featurizer(
    tokenizer, s['layout'], s['max_src_len'], s['max_tgt_len'], policy, eval_fields=True
  )
  src, tgt = tokenize_all(tokenizer, examples, s['layout'])
  rows = [featurizer.from_tokens(a, b, ex) for a, b, ex in zip(src, tgt, examples)]
  rows.sort(key=lambda r: (batching.sort_key(r), int(r['index'])))
  bounds = boundaries_for(
    datasets.data_config(config), s['max_src_len'], s['max_tgt_len'], s['layout']
  )
  batches = [
    batching.collate(rows[i : i + batch_size], batch_size, bounds)
    for i in range(0, len(rows), batch_size)
  ]
  if process_count > 1:
    per = batch_size // process_count
    batches = [
      {k: v[process_index * per : (process_index + 1) * per] for k, v in b.items()} for b in batches
    ]
  return batches

"""grain iterator stages: seeded per-epoch shuffling, length-bucketed batching, first-fit packing.

Each stage is a `grain.IterDataset` whose iterator has a small JSON-able state, and restoring a
state reproduces the exact batches that followed it. The stages work on whole examples with
cheap numpy bookkeeping, because grain's generic per-element machinery (map / shuffle / source
wrappers) costs ~130 us per element here, several times the work itself.
"""

from __future__ import annotations

import grain
import numpy as np

CHUNK_BATCHES = 16  # bucket batching sorts this many batches' worth of examples at a time


def epoch_order(num: int, seed: int, epoch: int, block: int | None = None) -> np.ndarray:
  """A permutation of range(num) keyed by (seed, epoch). With `block`, it visits blocks of
  `block` consecutive indices in random order and shuffles within each block, so a lazily read
  source reads each block once per epoch."""
  rng = np.random.default_rng([seed, epoch])
  if not block or block >= num:
    return rng.permutation(num)
  starts = np.arange(0, num, block)[rng.permutation(-(-num // block))]
  return np.concatenate([s + rng.permutation(min(block, num - s)) for s in starts])


class _ShuffledIterator(grain.DatasetIterator):
  """Endless: a fresh order of the examples each epoch (`epoch_order`); `featurize(i)` returns
  example i's features or None (dropped). State: epoch and position."""

  def __init__(self, num: int, featurize, seed: int, block: int | None):
    super().__init__()
    self._num, self._featurize, self._seed, self._block = num, featurize, seed, block
    self._epoch, self._pos, self._perm = 0, 0, None

  def _permutation(self):
    if self._perm is None:
      self._perm = epoch_order(self._num, self._seed, self._epoch, self._block)
    return self._perm

  def __next__(self):
    if self._num == 0:
      raise StopIteration
    for _ in range(self._num):  # at most one epoch of dropped examples in a row
      if self._pos >= self._num:
        self._epoch, self._pos, self._perm = self._epoch + 1, 0, None
      index = int(self._permutation()[self._pos])
      self._pos += 1
      features = self._featurize(index)
      if features is not None:
        return features
    raise ValueError(
      'The length policy dropped every example for a whole epoch; raise '
      "config.data.max_src_len / max_tgt_len or use length_policy='truncate'."
    )

  def get_state(self):
    return {'epoch': self._epoch, 'position': self._pos}

  def set_state(self, state):
    self._epoch, self._pos, self._perm = int(state['epoch']), int(state['position']), None


class ShuffledSource(grain.IterDataset):
  """Featurized examples 0..num-1 in a seeded order that changes every epoch."""

  def __init__(self, num: int, featurize, seed: int, block: int | None = None):
    super().__init__()
    self._args = (num, featurize, seed, block)

  def __iter__(self):
    return _ShuffledIterator(*self._args)


def pad_width(n: int, boundaries) -> int:
  """Smallest boundary >= n; beyond the last one, the next multiple of 16."""
  for b in boundaries:
    if n <= b:
      return int(b)
  return -(-n // 16) * 16


def collate(rows: list[dict], batch_size: int, boundaries) -> dict:
  """Stacks examples into [batch_size, width] arrays with segment 1 / position 0.. on real
  tokens; missing rows are all padding with index -1. Every sequence key gets the same width
  (the smallest boundary >= the longest sequence), so a model sees len(boundaries) shapes, not
  len(boundaries) ** 2: each distinct shape costs a compilation."""
  out = {}
  seq_keys = [k for k in rows[0] if np.ndim(rows[0][k]) == 1]
  width = pad_width(max(len(r[k]) for r in rows for k in seq_keys), boundaries)
  for key in seq_keys:
    arr = np.zeros((batch_size, width), rows[0][key].dtype)
    for i, r in enumerate(rows):
      arr[i, : len(r[key])] = r[key]
    out[key] = arr
  for group in ('inputs', 'targets'):
    if group in out:
      lengths = np.array([len(r[group]) for r in rows] + [0] * (batch_size - len(rows)))
      pos = np.arange(out[group].shape[1])[None, :]
      out[f'{group}_segment'] = (pos < lengths[:, None]).astype(np.int32)
      out[f'{group}_position'] = np.where(pos < lengths[:, None], pos, 0).astype(np.int32)
  for key in ('index', 'length'):
    if key in rows[0]:
      out[key] = np.full((batch_size,), -1 if key == 'index' else 0, np.int32)
      out[key][: len(rows)] = [r[key] for r in rows]
  return out


def sort_key(ex: dict):
  return max(len(ex['targets']), len(ex.get('inputs', ())))


class _BucketIterator(grain.DatasetIterator):
  """Reads a chunk of examples, sorts it by length, cuts batches padded to bucket widths and
  emits them in a seeded random order. State: parent state at the chunk's start, chunk number,
  batches already emitted; restoring re-reads the chunk and skips those batches."""

  def __init__(self, parent, batch_size, boundaries, seed):
    super().__init__(parent)
    self._batch_size, self._boundaries, self._seed = batch_size, boundaries, seed
    self._chunk_state = self._parent.get_state()
    self._chunk, self._emitted, self._batches = 0, 0, None

  def _load(self):
    self._chunk_state = self._parent.get_state()
    examples = []
    for ex in self._parent:
      examples.append(ex)
      if len(examples) == self._batch_size * CHUNK_BATCHES:
        break
    examples.sort(key=sort_key)  # stable: ties keep the shuffled order
    bs = self._batch_size
    batches = [
      collate(examples[i : i + bs], bs, self._boundaries) for i in range(0, len(examples), bs)
    ]
    order = np.random.default_rng([self._seed, self._chunk]).permutation(len(batches))
    self._batches = [batches[i] for i in order]

  def __next__(self):
    if self._batches is None:
      self._load()
    if self._emitted >= len(self._batches):
      self._chunk, self._emitted = self._chunk + 1, 0
      self._load()
    if not self._batches:
      raise StopIteration
    self._emitted += 1
    return self._batches[self._emitted - 1]

  def get_state(self):
    return {'parent': self._chunk_state, 'chunk': self._chunk, 'emitted': self._emitted}

  def set_state(self, state):
    self._parent.set_state(state['parent'])
    self._chunk_state, self._chunk = state['parent'], state['chunk']
    self._emitted, self._batches = state['emitted'], None


class BucketBatchDataset(grain.IterDataset):
  """Length-bucketed batches of a fixed row count (see `_BucketIterator`)."""

  def __init__(self, parent, batch_size: int, boundaries, seed: int):
    super().__init__(parent)
    self._args = (batch_size, boundaries, seed)

  def __iter__(self):
    return _BucketIterator(self._parent.__iter__(), *self._args)


class _PackedRows:
  """`rows` rows of `length` tokens filled first-fit; tracks segment ids and positions.

  Row choice runs on Python ints (a numpy call per example costs more than the whole scan)."""

  def __init__(self, rows: int, length: int, example: dict):
    self.groups = ('inputs', 'targets') if 'inputs' in example else ('targets',)
    self.arrays = {k: np.zeros((rows, length), v.dtype) for k, v in example.items()}
    for g in self.groups:
      self.arrays[f'{g}_segment'] = np.zeros((rows, length), np.int32)
      self.arrays[f'{g}_position'] = np.zeros((rows, length), np.int32)
    self.used = {g: [0] * rows for g in self.groups}
    self.count = [0] * rows
    self.length = length
    self._positions = np.arange(length, dtype=np.int32)

  def _first_fit(self, sizes: dict) -> int | None:
    limit = self.length
    if len(self.groups) == 1:
      need, used = sizes['targets'], self.used['targets']
      return next((r for r, u in enumerate(used) if u + need <= limit), None)
    need_i, need_t = sizes['inputs'], sizes['targets']
    used_i, used_t = self.used['inputs'], self.used['targets']
    return next(
      (
        r for r in range(len(used_t)) if used_t[r] + need_t <= limit and used_i[r] + need_i <= limit
      ),
      None,
    )

  def add(self, ex: dict) -> bool:
    """Puts `ex` in the first row with room on every side; False when no row has room."""
    sizes = {g: len(ex[g]) for g in self.groups}
    row = self._first_fit(sizes)
    if row is None:
      return False
    self.count[row] += 1
    starts = {g: self.used[g][row] for g in self.groups}
    for key, value in ex.items():
      start = starts['inputs' if key == 'inputs' else 'targets']
      self.arrays[key][row, start : start + len(value)] = value
    for g in self.groups:
      start, n = starts[g], sizes[g]
      self.arrays[f'{g}_segment'][row, start : start + n] = self.count[row]
      self.arrays[f'{g}_position'][row, start : start + n] = self._positions[:n]
      self.used[g][row] = start + n
    return True


class _PackIterator(grain.DatasetIterator):
  """First-fit packing into a [rows, length] batch; a batch closes when the next example fits in
  no row, and that example opens the next batch. State: the parent's state before that example."""

  def __init__(self, parent, rows: int, length: int):
    super().__init__(parent)
    self._rows, self._length = rows, length
    self._carry, self._carry_state = None, None

  def __next__(self):
    if self._carry is not None:
      first, self._carry = self._carry, None
    else:
      first = next(self._parent)
    packed = _PackedRows(self._rows, self._length, first)
    if not packed.add(first):
      raise ValueError(
        f'An example with lengths { {k: len(v) for k, v in first.items()} } does '
        f'not fit in packed_len={self._length}.'
      )
    while True:
      state = self._parent.get_state()
      try:
        ex = next(self._parent)
      except StopIteration:
        break
      if not packed.add(ex):
        self._carry, self._carry_state = ex, state
        break
    return packed.arrays

  def get_state(self):
    return {'parent': self._carry_state if self._carry is not None else self._parent.get_state()}

  def set_state(self, state):
    self._parent.set_state(state['parent'])
    self._carry, self._carry_state = None, None


class PackDataset(grain.IterDataset):
  """Packed batches of `rows` rows, `length` tokens each (see `_PackIterator`)."""

  def __init__(self, parent, rows: int, length: int):
    super().__init__(parent)
    self._args = (rows, length)

  def __iter__(self):
    return _PackIterator(self._parent.__iter__(), *self._args)

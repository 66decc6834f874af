"""Synthetic seq2seq tasks for length generalization, deterministic from a seed.

Sequences are strings of single-character symbols (the `char` tokenizer maps one character to
one id). `length` is the number of input symbols (for addition: digits per operand).
`addition_reversed` is addition with every number written least significant digit first (operands
and sum), so the digit at output position i depends only on operand digits <= i and the carry
flows in decoding order (Lee et al. 2023, "Teaching arithmetic to small transformers"). It draws
the same operands as `addition` from the same seed: the two tasks differ only in the format.
Train and validation draw lengths from 1..train_max_len; test covers 1..test_max_len evenly,
so accuracy can be reported per length, in and beyond the training range.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from train.data import base

SYMBOLS = 'abcdefghijklmnopqrstuvwxyz'
DIGITS = '0123456789'
SPLIT_CODES = {'train': 0, 'validation': 1, 'test': 2}


def _symbols(rng: np.random.Generator, n: int) -> str:
  return ''.join(SYMBOLS[i] for i in rng.integers(0, len(SYMBOLS), size=n))


def _number(rng: np.random.Generator, n: int) -> int:
  """A uniformly drawn integer with exactly n digits."""
  low = 0 if n == 1 else 10 ** (n - 1)
  return (
    int(rng.integers(low, 10**n))
    if n < 18
    else int(''.join(DIGITS[d] for d in [rng.integers(1, 10), *rng.integers(0, 10, size=n - 1)]))
  )


def _copy(rng, n):
  s = _symbols(rng, n)
  return s, s


def _reverse(rng, n):
  s = _symbols(rng, n)
  return s, s[::-1]


def _sort(rng, n):
  s = _symbols(rng, n)
  return s, ''.join(sorted(s))


def _duplicate(rng, n):
  s = _symbols(rng, n)
  return s, s + s


def _addition(rng, n):
  a, b = _number(rng, n), _number(rng, n)
  return f'{a}+{b}', str(a + b)


def _addition_reversed(rng, n):
  source, target = _addition(rng, n)
  a, b = source.split('+')
  return f'{a[::-1]}+{b[::-1]}', target[::-1]


TASKS = {
  'copy': _copy,
  'reverse': _reverse,
  'sort': _sort,
  'duplicate': _duplicate,
  'addition': _addition,
  'addition_reversed': _addition_reversed,
}
# Each task's RNG stream id. Fixed, so adding a task never changes another task's examples;
# addition_reversed shares addition's stream (same operands, different format).
_STREAMS = {
  'addition': 0,
  'copy': 1,
  'duplicate': 2,
  'reverse': 3,
  'sort': 4,
  'addition_reversed': 0,
}


def check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f'Unknown lengthgen task {task!r}; valid choices: {sorted(TASKS)}.')


def split_lengths(
  split: str, num: int, train_max_len: int, test_max_len: int, rng: np.random.Generator
) -> np.ndarray:
  """Lengths of a split: uniform over 1..L for train, cycling evenly for validation / test."""
  if split == 'train':
    return rng.integers(1, train_max_len + 1, size=num)
  top = train_max_len if split == 'validation' else test_max_len
  return (np.arange(num) % top) + 1


def generate(
  task: str, split: str, num: int, *, train_max_len: int = 20, test_max_len: int = 40, seed: int = 0
) -> list[dict]:
  """Examples `{index, source, target, length}` of one split; the same arguments give the same
  examples (the RNG is keyed by seed, split and task)."""
  check_task(task)
  if split not in SPLIT_CODES:
    raise ValueError(f'Unknown lengthgen split {split!r}; valid choices: {sorted(SPLIT_CODES)}.')
  rng = np.random.default_rng([seed, SPLIT_CODES[split], _STREAMS[task]])
  lengths = split_lengths(split, num, train_max_len, test_max_len, rng)
  examples = []
  for index, n in enumerate(lengths):
    source, target = TASKS[task](rng, int(n))
    examples.append({'index': index, 'source': source, 'target': target, 'length': int(n)})
  return examples


@dataclasses.dataclass(eq=False)
class LengthgenConfig(tfds.core.BuilderConfig):
  task: str = 'copy'
  train_max_len: int = 20
  test_max_len: int = 40
  num_train: int = 10000
  num_eval: int = 1000
  seed: int = 0


def make_config(
  task='copy', train_max_len=20, test_max_len=40, num_train=10000, num_eval=1000, seed=0
) -> LengthgenConfig:
  """A builder config whose name encodes every parameter (so each variant has its own files)."""
  check_task(task)
  if not 1 <= train_max_len <= test_max_len:
    raise ValueError(
      f'lengthgen needs 1 <= train_max_len <= test_max_len, got {train_max_len} and {test_max_len}.'
    )
  name = f'{task}-L{train_max_len}-T{test_max_len}-n{num_train}-e{num_eval}-s{seed}'
  return LengthgenConfig(
    name=name,
    task=task,
    train_max_len=train_max_len,
    test_max_len=test_max_len,
    num_train=num_train,
    num_eval=num_eval,
    seed=seed,
  )


class Lengthgen(base.Builder, skip_registration=True):
  """Copy / reverse / sort / duplicate / addition (plain or digit-reversed), lengths stored."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [make_config(task) for task in TASKS]

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      description='Synthetic sequence tasks for length generalization.',
      features=tfds.features.FeaturesDict(
        {
          'index': np.int64,
          'source': tfds.features.Text(),
          'target': tfds.features.Text(),
          'length': np.int64,
        }
      ),
      supervised_keys=('source', 'target'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    c = self.builder_config
    sizes = {'train': c.num_train, 'validation': c.num_eval, 'test': c.num_eval}
    return {split: self._generate_examples(split, num) for split, num in sizes.items()}

  def _generate_examples(self, split, num):
    c = self.builder_config
    for ex in generate(
      c.task, split, num, train_max_len=c.train_max_len, test_max_len=c.test_max_len, seed=c.seed
    ):
      yield ex['index'], ex

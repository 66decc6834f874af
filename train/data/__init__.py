"""Data: tfds builders (multi30k, lengthgen, text), tokenizers, grain pipelines.

The names below are the package's contract (docs/contracts.md, `train/data/`). They load on
first use, so tokenizer-only users (prepare, evaluate, word2vec) skip importing grain and jax.
"""

import importlib

_EXPORTS = {
  'build': 'train.data.datasets',
  'load_examples': 'train.data.datasets',
  'make_eval_batches': 'train.data.pipeline',
  'make_train_iterator': 'train.data.pipeline',
  'load_text_lines': 'train.data.text',
  'get_tokenizer': 'train.data.tokenizer',
  'load_tokenizer': 'train.data.tokenizer',
  'PAD': 'train.data.tokenizer',
  'EOS': 'train.data.tokenizer',
  'BOS': 'train.data.tokenizer',
  'UNK': 'train.data.tokenizer',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'train.data' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))

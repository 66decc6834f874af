r"""Builds a config's dataset and tokenizer (idempotent: a second run reuses both).

  python -m train.data.prepare --config=configs/multi30k.py [--config.data.src=fr]

Prints each split's example count, the lines skipped as empty / non-UTF-8, and the tokenizer.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from train.data import datasets
from train.data import tokenizer as tokenizer_lib


def define_flags():
  """--config, defined only when run as a program (tests import this module)."""
  config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py[:arg]).', lock_config=False
  )


def prepare(config) -> dict:
  """Builds the dataset and tokenizer; returns a summary dict (also printed by main)."""
  start = time.perf_counter()
  builder = datasets.build(config)
  built = time.perf_counter()
  tok = tokenizer_lib.get_tokenizer(config)
  done = time.perf_counter()
  metadata = dict(getattr(builder.info, 'metadata', None) or {})
  return {
    'dataset': f'{builder.name}/{builder.builder_config.name if builder.builder_config else ""}',
    'data_dir': str(builder.data_dir),
    'splits': {name: info.num_examples for name, info in builder.info.splits.items()},
    'skipped': {k[len('skipped_') :]: v for k, v in metadata.items() if k.startswith('skipped_')},
    'tokenizer': f'{tok.kind}, vocab_size={tok.vocab_size}',
    'seconds': {'dataset': round(built - start, 2), 'tokenizer': round(done - built, 2)},
  }


def main(argv):
  del argv
  if flags.FLAGS.config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/multi30k.py')
  summary = prepare(flags.FLAGS.config)
  print(f'dataset   {summary["dataset"]}  ({summary["data_dir"]})')
  for split, count in summary['splits'].items():
    skipped = summary['skipped'].get(split, 0)
    print(f'  {split:<20s} {count:>8,d} examples' + (f'  ({skipped} skipped)' if skipped else ''))
  print(f'tokenizer {summary["tokenizer"]}')
  print(
    f'time      dataset {summary["seconds"]["dataset"]} s, tokenizer '
    f'{summary["seconds"]["tokenizer"]} s'
  )


def run_cli():
  from train import cli  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.WARNING)
  cli.run(main, define_flags=define_flags, required=('config',))


if __name__ == '__main__':
  run_cli()

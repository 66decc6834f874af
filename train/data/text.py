"""Monolingual English text (word2vec, decoder-only LMs): lines of `text/en_15m.txt.gz`.

Offline, the corpus is read from the data dir. Online without one, text8 (the first 10^8 bytes
of cleaned English Wikipedia, one long line) is downloaded and cut into lines of 1,000 words.
"""

from __future__ import annotations

import gzip
import itertools
import os
import pathlib
import urllib.request
import zipfile

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from train.data import base
from train.data import paths

FILENAME = 'en_15m.txt.gz'
TEXT8_URL = 'http://mattmahoney.net/dc/text8.zip'
TEXT8_WORDS_PER_LINE = 1000
VALIDATION_EVERY = 100  # line i is validation when i % 100 == 0, else train


def split_of(index: int) -> str:
  return 'validation' if index % VALIDATION_EVERY == 0 else 'train'


def local_file(data_dir=None) -> pathlib.Path | None:
  """The corpus file under the configured data root, or None when it should be downloaded."""
  corpus = paths.corpus_dir('text', data_dir, FILENAME, TEXT8_URL)
  if corpus is None:
    return None
  path = corpus / FILENAME
  if not path.is_file():
    raise FileNotFoundError(
      f'Text corpus {path} is missing. Point {paths.DATA_ENV} at a directory '
      f'laid out as {paths.SHARED_LAYOUT}, or unset it to download text8.'
    )
  return path


def iter_gz_lines(path):
  """(line_index, text or None) for every line; None marks an empty or non-UTF-8 line."""
  with gzip.open(path, 'rb') as f:
    for index, raw in enumerate(f):
      try:
        line = raw.decode('utf-8').strip()
      except UnicodeDecodeError:
        line = ''
      yield index, (line or None)


def iter_text8_lines(zip_path, words_per_line: int = TEXT8_WORDS_PER_LINE):
  """(line_index, text) chunks of text8's single line of words."""
  with zipfile.ZipFile(zip_path) as z:
    words = z.read('text8').decode('utf-8').split()
  for index, start in enumerate(range(0, len(words), words_per_line)):
    yield index, ' '.join(words[start : start + words_per_line])


def download_text8(dest_dir=None) -> pathlib.Path:
  """Fetches text8.zip into the build dir once (atomically) and returns its path."""
  dest = pathlib.Path(dest_dir or paths.build_dir() / 'downloads') / 'text8.zip'
  if not dest.is_file():
    paths.require_online(TEXT8_URL, 'text')
    logging.info('Downloading %s to %s', TEXT8_URL, dest)
    with urllib.request.urlopen(TEXT8_URL) as response:
      paths.write_atomic(dest, response.read())
  return dest


def load_text_lines(data_dir=None, max_lines: int | None = None):
  """Iterator over the raw corpus lines (empty / non-UTF-8 lines skipped), for word2vec.

  `data_dir` is the data root (default $ATTNLAB_DATA_DIR); with neither set, text8 is downloaded.
  """
  path = local_file(data_dir)
  lines = iter_gz_lines(path) if path is not None else iter_text8_lines(download_text8())
  good = (line for _, line in lines if line is not None)
  return itertools.islice(good, max_lines) if max_lines is not None else good


class Text(base.Builder, skip_registration=True):
  """One example per non-empty line, with its original line index."""

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, raw_file=None, **kwargs):
    self._raw_file = pathlib.Path(raw_file) if raw_file else None
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      description='Monolingual English lines (lowercased, punctuation stripped).',
      features=tfds.features.FeaturesDict({'index': np.int64, 'text': tfds.features.Text()}),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    if self._raw_file is not None:
      source = ('gz', os.fspath(self._raw_file))
    else:
      paths.require_online(TEXT8_URL, 'text')
      source = ('text8', os.fspath(dl_manager.download(TEXT8_URL)))
    return {split: self._generate_examples(split, source) for split in ('train', 'validation')}

  def _generate_examples(self, split, source):
    kind, path = source
    lines = iter_gz_lines(path) if kind == 'gz' else iter_text8_lines(path)
    skipped = 0
    for index, line in lines:
      if split_of(index) != split:
        continue
      if line is None:
        skipped += 1
        continue
      yield index, {'index': index, 'text': line}
    self.info.metadata[f'skipped_{split}'] = skipped
    if skipped:
      logging.warning('Text %s: skipped %d empty or non-UTF-8 lines of %s.', split, skipped, path)

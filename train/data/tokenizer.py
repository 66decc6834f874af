"""Tokenizers with fixed special ids (pad=0, eos=1, bos=2, unk=3), trained once and cached.

`get_tokenizer(config)` trains SentencePiece (unigram / bpe) or builds a character vocabulary on
the train split and caches it under `$ATTNLAB_BUILD_DIR/tokenizers/`, keyed by a hash of every
input (data fingerprint, languages, kind, vocab size, options): a second call loads the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import tempfile

from absl import logging
import numpy as np
import sentencepiece as spm

from configs import common
from train.data import datasets
from train.data import lengthgen
from train.data import paths
from train.data import text

from model.vocab import BOS, EOS, PAD, UNK  # pylint: disable=g-bad-import-order

NUM_SPECIAL = 4
SPECIAL_PIECES = ('<pad>', '</s>', '<s>', '<unk>')  # names of ids 0..3 (SentencePiece's too)
KINDS = ('unigram', 'bpe', 'char')
META = 'tokenizer.json'
UNK_TEXT = ' \u2047 '  # what SentencePiece prints for <unk>
TEXT_TOKENIZER_LINES = 100_000  # sentencepiece samples this many LM-corpus lines (~2M words)
MAX_TOKENIZER_LINES = 2_000_000  # and at most this many sentences of a parallel corpus (WMT)


def _content_ids(ids) -> list[int]:
  """Ids up to (not including) the first EOS, without PAD / BOS."""
  out = []
  for i in np.asarray(ids).reshape(-1).tolist():
    if i == EOS:
      break
    if i not in (PAD, BOS):
      out.append(i)
  return out


class SentencePieceTokenizer:
  """A SentencePiece model whose first four ids are pad, eos, bos, unk."""

  kind = 'sentencepiece'

  def __init__(self, model_proto: bytes):
    self._proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    specials = [self._sp.pad_id(), self._sp.eos_id(), self._sp.bos_id(), self._sp.unk_id()]
    if specials != [PAD, EOS, BOS, UNK]:
      raise ValueError(
        f'SentencePiece model has special ids {specials}; expected pad=0, eos=1, '
        'bos=2, unk=3. Delete the cached tokenizer and rebuild it.'
      )

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str, side: str | None = None) -> list[int]:
    del side  # one vocabulary for both sides
    return self._sp.encode(text)

  def encode_batch(self, texts: list[str], side: str | None = None) -> list[list[int]]:
    del side
    return self._sp.encode(list(texts))

  def decode(self, ids, side: str | None = None) -> str:
    del side
    return self._sp.decode(_content_ids(ids))

  def id_to_piece(self, i: int) -> str:
    """The piece string of id `i` (e.g. '▁house'); word2vec exports rows under these names."""
    return self._sp.id_to_piece(int(i))

  def save(self, directory) -> None:
    directory = pathlib.Path(directory)
    paths.write_atomic(directory / 'spm.model', self._proto)
    _write_meta(directory, {'type': 'sentencepiece', 'model': 'spm.model'})


class CharTokenizer:
  """One id per character: 4 + the character's position in `chars`; others map to unk."""

  kind = 'char'

  def __init__(self, chars: str):
    if len(set(chars)) != len(chars):
      raise ValueError('CharTokenizer characters must be unique.')
    self._chars = chars
    self._ids = {c: NUM_SPECIAL + i for i, c in enumerate(chars)}

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + len(self._chars)

  def encode(self, text: str, side: str | None = None) -> list[int]:
    del side
    return [self._ids.get(c, UNK) for c in text]

  def encode_batch(self, texts, side=None):
    return [self.encode(t) for t in texts]

  def decode(self, ids, side: str | None = None) -> str:
    del side
    return ''.join(
      UNK_TEXT.strip() if i == UNK else self._chars[i - NUM_SPECIAL]
      for i in _content_ids(ids)
      if i < self.vocab_size
    )

  def id_to_piece(self, i: int) -> str:
    """The symbol of id `i`; the four specials as <pad>, </s>, <s>, <unk>."""
    i = int(i)
    if not 0 <= i < self.vocab_size:
      raise IndexError(f'id {i} is outside the vocabulary [0, {self.vocab_size}).')
    return SPECIAL_PIECES[i] if i < NUM_SPECIAL else self._chars[i - NUM_SPECIAL]

  def save(self, directory) -> None:
    _write_meta(pathlib.Path(directory), {'type': 'char', 'chars': self._chars})


class PairTokenizer:
  """Separate source and target vocabularies (joint_vocab=False); `side` picks one, default
  target. Ids of the two sides overlap, so such models should not share embeddings."""

  kind = 'pair'

  def __init__(self, source, target):
    self.source, self.target = source, target

  def _side(self, side):
    if side not in (None, 'source', 'target'):
      raise ValueError(f"side must be 'source' or 'target', got {side!r}.")
    return self.source if side == 'source' else self.target

  @property
  def vocab_size(self) -> int:
    return max(self.source.vocab_size, self.target.vocab_size)

  def encode(self, text: str, side: str | None = None) -> list[int]:
    return self._side(side).encode(text)

  def encode_batch(self, texts, side=None):
    return self._side(side).encode_batch(texts)

  def decode(self, ids, side: str | None = None) -> str:
    return self._side(side).decode(ids)

  def id_to_piece(self, i: int, side: str | None = None) -> str:
    return self._side(side).id_to_piece(i)

  def save(self, directory) -> None:
    directory = pathlib.Path(directory)
    self.source.save(directory / 'source')
    self.target.save(directory / 'target')
    _write_meta(directory, {'type': 'pair', 'source': 'source', 'target': 'target'})


def _write_meta(directory: pathlib.Path, meta: dict) -> None:
  paths.write_atomic(directory / META, json.dumps(meta, indent=1).encode())


def load_tokenizer(directory):
  """Loads a tokenizer written by `.save(directory)`."""
  directory = pathlib.Path(directory)
  meta_path = directory / META
  if not meta_path.is_file():
    raise FileNotFoundError(
      f'No tokenizer at {directory} ({META} missing); it is written by '
      'Tokenizer.save() / train.data.get_tokenizer().'
    )
  meta = json.loads(meta_path.read_text())
  kind = meta.get('type')
  if kind == 'sentencepiece':
    return SentencePieceTokenizer((directory / meta['model']).read_bytes())
  if kind == 'char':
    return CharTokenizer(meta['chars'])
  if kind == 'pair':
    return PairTokenizer(
      load_tokenizer(directory / meta['source']), load_tokenizer(directory / meta['target'])
    )
  raise ValueError(
    f'{meta_path}: unknown tokenizer type {kind!r}; valid: sentencepiece, char, pair.'
  )


def train_sentencepiece(
  lines, *, vocab_size: int, model_type: str, input_sentence_size: int = 0
) -> SentencePieceTokenizer:
  """Trains a SentencePiece model in memory. The vocabulary limit is soft so tiny corpora work;
  identity normalization keeps decode(encode(s)) == s up to runs of spaces."""
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_writer=proto,
    vocab_size=int(vocab_size),
    model_type=model_type,
    pad_id=PAD,
    eos_id=EOS,
    bos_id=BOS,
    unk_id=UNK,
    character_coverage=1.0,
    normalization_rule_name='identity',
    hard_vocab_limit=False,
    input_sentence_size=int(input_sentence_size),
    shuffle_input_sentence=True,
    num_threads=max(1, min(4, os.cpu_count() or 1)),
    minloglevel=2,
  )
  return SentencePieceTokenizer(proto.getvalue())


def build_char(lines, base: str = '') -> CharTokenizer:
  """Characters seen in `lines` (plus `base`), in sorted order."""
  chars = set(base)
  for line in lines:
    chars.update(line)
  return CharTokenizer(''.join(sorted(chars)))


def _text_train_lines(raw):
  if raw is None:
    return (line for _, line in text.iter_text8_lines(text.download_text8()))
  return (
    line for i, line in text.iter_gz_lines(raw) if line is not None and text.split_of(i) == 'train'
  )


def _corpus(config):
  """(key material, source-lines fn, target-lines fn) of the config's training text; the
  functions only run on a cache miss."""
  d = datasets.data_config(config)
  if common.opt(d, 'name') == 'text':
    raw = text.local_file(d.get('data_dir', None))
    key = paths.fingerprint([raw]) if raw else 'text8'
    return key, (lambda: []), (lambda: _text_train_lines(raw))
  builder = datasets.build(config)  # its data_dir names the raw-data fingerprint and variant
  examples = lambda: datasets.load_examples(config, 'train')
  return (
    str(builder.data_dir),
    lambda: [ex['source'] for ex in examples()],
    lambda: [ex['target'] for ex in examples()],
  )


def tokenizer_settings(config) -> dict:
  d = datasets.data_config(config)
  name = common.opt(d, 'name')
  # The one derived default: lengthgen's symbols are characters (base_config says unigram).
  kind = d.get('tokenizer', None) or ('char' if name == 'lengthgen' else common.opt(d, 'tokenizer'))
  if kind not in KINDS:
    raise ValueError(f'Unknown config.data.tokenizer {kind!r}; valid choices: {list(KINDS)}.')
  return {
    'kind': kind,
    'vocab_size': int(common.opt(d, 'vocab_size')),
    'joint': bool(common.opt(d, 'joint_vocab')) or name == 'text',
    'sample_lines': TEXT_TOKENIZER_LINES if name == 'text' else MAX_TOKENIZER_LINES,
    'version': 1,
  }


def _train(settings: dict, src_lines, tgt_lines, base: str):
  kind, size = settings['kind'], settings['vocab_size']
  if kind == 'char':
    make = lambda lines: build_char(lines, base)
  else:
    make = lambda lines: train_sentencepiece(
      lines, vocab_size=size, model_type=kind, input_sentence_size=settings['sample_lines']
    )
  if settings['joint']:
    src = src_lines()
    return make(list(src) + list(tgt_lines()) if src else tgt_lines())
  return PairTokenizer(make(src_lines()), make(tgt_lines()))


def get_tokenizer(config):
  """The config's tokenizer, trained on its train split on first use and cached afterwards."""
  settings = tokenizer_settings(config)
  d = datasets.data_config(config)
  name = common.opt(d, 'name')
  key_material, src_lines, tgt_lines = _corpus(config)
  key = hashlib.sha256(
    json.dumps([key_material, settings, spm.__version__], sort_keys=True).encode()
  ).hexdigest()[:16]
  variant = '' if datasets.preprocess_of(d) == 'raw' else f'-{datasets.preprocess_of(d)}'
  cache = paths.build_dir() / 'tokenizers' / f'{name}{variant}-{settings["kind"]}-{key}'
  if (cache / META).is_file():
    logging.info('Reusing tokenizer %s', cache)
    return load_tokenizer(cache)
  with paths.build_lock(f'tokenizer-{cache.name}'):
    if not (cache / META).is_file():
      logging.info('Training %s tokenizer for %s into %s', settings['kind'], name, cache)
      base = lengthgen.SYMBOLS + lengthgen.DIGITS + '+' if name == 'lengthgen' else ''
      tok = _train(settings, src_lines, tgt_lines, base)
      cache.parent.mkdir(parents=True, exist_ok=True)
      tmp = pathlib.Path(tempfile.mkdtemp(dir=cache.parent, prefix=f'.{cache.name}.'))
      try:
        tok.save(tmp)
        os.replace(tmp, cache)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
  return load_tokenizer(cache)

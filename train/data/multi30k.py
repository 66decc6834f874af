"""Multi30K (task 1, raw captions) as a tfds builder: one config per ordered language pair and
preprocessing.

Local files `{split}.{lang}.gz` (validation is `val.{lang}.gz`) are read from `raw_dir`; without
one, the files are downloaded from the upstream repository. Config `{src}-{tgt}` keeps the raw
text; `{src}-{tgt}-lc_norm_tok` (config.data.preprocess='lc_norm_tok') stores the literature's
lowercased, normalised, Moses-tokenized text (train.data.moses, applied to the raw files here) as
`source`/`target`, and the raw lines as `source_raw`/`target_raw` (sacreBLEU scores against them).
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from train.data import base
from train.data import moses
from train.data import paths

LANGS = ('en', 'de', 'fr', 'cs')
PREPROCESS = ('raw', 'lc_norm_tok')  # config.data.preprocess
URL = 'https://github.com/multi30k/dataset/raw/master/data/task1/raw/{prefix}.{lang}.gz'
REQUIRED_SPLITS = ('train', 'validation')
# Upstream splits and the languages each one has (used only when downloading).
UPSTREAM = {
  'train': LANGS,
  'validation': LANGS,
  'test_2016_flickr': LANGS,
  'test_2017_flickr': ('en', 'de', 'fr'),
  'test_2017_mscoco': ('en', 'de', 'fr'),
}
HOMEPAGE = 'https://github.com/multi30k/dataset'
GET_DATA = (
  f'Get the raw files from {HOMEPAGE} (data/task1/raw/) or point '
  f'{paths.DATA_ENV} at a directory laid out as {paths.SHARED_LAYOUT}.'
)


def config_name(src: str, tgt: str, preprocess: str = 'raw') -> str:
  """The builder config of a language pair and preprocessing ('en-de', 'en-de-lc_norm_tok')."""
  return f'{src}-{tgt}' if preprocess == 'raw' else f'{src}-{tgt}-{preprocess}'


def file_prefix(split: str) -> str:
  return 'val' if split == 'validation' else split


def split_name(prefix: str) -> str:
  return 'validation' if prefix == 'val' else prefix


def local_split_files(raw_dir, src: str, tgt: str) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
  """{split: (src_file, tgt_file)}: train and validation must exist; any other split is kept
  when both of its files are present."""
  raw_dir = pathlib.Path(raw_dir)
  files = {}
  for split in REQUIRED_SPLITS:
    pair = tuple(raw_dir / f'{file_prefix(split)}.{lang}.gz' for lang in (src, tgt))
    for path in pair:
      if not path.is_file():
        raise FileNotFoundError(f"Multi30K split '{split}' is missing its file {path}. {GET_DATA}")
    files[split] = pair
  for path in sorted(raw_dir.glob(f'*.{src}.gz')):
    prefix = path.name[: -len(f'.{src}.gz')]
    split = split_name(prefix)
    if split in files or not prefix.replace('_', '').isalnum():
      continue
    other = raw_dir / f'{prefix}.{tgt}.gz'
    if other.is_file():
      files[split] = (path, other)
    else:
      logging.info("Multi30K %s-%s: no split '%s' (%s is missing).", src, tgt, split, other)
  return files


def read_pairs(src_path, tgt_path) -> tuple[list[tuple[int, str, str]], int]:
  """Aligned (line_index, source, target) triples and the number of pairs skipped because a
  side was empty or not UTF-8. Raises when the two files disagree on their line count."""
  src_lines, _ = paths.read_gz_lines(src_path)
  tgt_lines, _ = paths.read_gz_lines(tgt_path)
  if len(src_lines) != len(tgt_lines):
    raise ValueError(
      f'Line-count mismatch: {src_path} has {len(src_lines)} lines but {tgt_path} has '
      f'{len(tgt_lines)}; line N of one must translate line N of the other. Re-download both.'
    )
  pairs = [
    (i, s, t)
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines))
    if s is not None and t is not None
  ]
  return pairs, len(src_lines) - len(pairs)


@dataclasses.dataclass(eq=False)
class Multi30kConfig(tfds.core.BuilderConfig):
  src: str = 'en'
  tgt: str = 'de'
  preprocess: str = 'raw'  # one of PREPROCESS


class Multi30k(base.Builder, skip_registration=True):
  """Sentence pairs with their original line index (tfds stores examples in hashed order)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [
    Multi30kConfig(name=f'{s}-{t}', src=s, tgt=t, description=f'{s} -> {t}')
    for s, t in itertools.permutations(LANGS, 2)
  ] + [
    Multi30kConfig(
      name=config_name(s, t, 'lc_norm_tok'),
      src=s,
      tgt=t,
      preprocess='lc_norm_tok',
      description=f'{s} -> {t}, lowercased, normalised, Moses-tokenized '
      f'(sacremoses {moses.VERSION})',
    )
    for s, t in itertools.permutations(LANGS, 2)
  ]

  def __init__(self, *, raw_dir=None, **kwargs):
    self._raw_dir = pathlib.Path(raw_dir) if raw_dir else None
    super().__init__(**kwargs)

  def _info(self):
    text = {'source': tfds.features.Text(), 'target': tfds.features.Text()}
    if self.builder_config.preprocess != 'raw':
      text.update(source_raw=tfds.features.Text(), target_raw=tfds.features.Text())
    return tfds.core.DatasetInfo(
      builder=self,
      description='Multi30K task 1: Flickr30K image captions with professional translations.',
      features=tfds.features.FeaturesDict({'index': np.int64, **text}),
      supervised_keys=('source', 'target'),
      homepage=HOMEPAGE,
      citation='Elliott et al. 2016, Multi30K: Multilingual English-German Image Descriptions.',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    src, tgt = self.builder_config.src, self.builder_config.tgt
    if self._raw_dir is not None:
      files = local_split_files(self._raw_dir, src, tgt)
    else:
      paths.require_online(URL.format(prefix='train', lang=src), 'multi30k')
      files = {}
      for split, langs in UPSTREAM.items():
        if src in langs and tgt in langs:
          urls = [URL.format(prefix=file_prefix(split), lang=lang) for lang in (src, tgt)]
          files[split] = tuple(dl_manager.download(urls))
    return {split: self._generate_examples(split, *pair) for split, pair in files.items()}

  def _generate_examples(self, split, src_path, tgt_path):
    pairs, skipped = read_pairs(src_path, tgt_path)
    self.info.metadata[f'skipped_{split}'] = skipped
    if skipped:
      logging.warning(
        'Multi30K %s %s: skipped %d pairs with an empty or non-UTF-8 line (%s, %s).',
        self.builder_config.name,
        split,
        skipped,
        src_path,
        tgt_path,
      )
    c = self.builder_config
    if c.preprocess == 'raw':
      for index, source, target in pairs:
        yield index, {'index': index, 'source': source, 'target': target}
      return
    for index, source, target in pairs:
      yield (
        index,
        {
          'index': index,
          'source': moses.process(source, c.src),
          'target': moses.process(target, c.tgt),
          'source_raw': source,
          'target_raw': target,
        },
      )

"""Multi30K builder: real split counts and order, extra splits, and every bad-input case."""

import gzip
import logging

import pytest

from data_testutil import make_config, toy_pairs, write_gz, write_multi30k
from train import data
from train.data import datasets
from train.data import multi30k


def _config(root, src='en', tgt='de'):
  return make_config(name='multi30k', src=src, tgt=tgt, data_dir=str(root))


def test_real_counts_and_original_order(multi30k_config, shared_data):
  builder = data.build(multi30k_config)
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert counts == {
    'train': 29000,
    'validation': 1014,
    'test_2016_flickr': 1000,
    'test_2017_flickr': 1000,
  }
  examples = data.load_examples(multi30k_config, 'test_2016_flickr')
  assert [ex['index'] for ex in examples] == list(range(1000))  # file order, not tfds's hash order
  with gzip.open(shared_data / 'multi30k' / 'test_2016_flickr.de.gz', 'rt') as f:
    german = f.read().splitlines()
  assert [ex['target'] for ex in examples] == [line.strip() for line in german]
  # 'val' (the upstream file prefix) names the validation split too.
  assert (
    data.load_examples(multi30k_config, 'val')[3]
    == data.load_examples(multi30k_config, 'validation')[3]
  )


def test_pair_without_2017_test_files(tmp_path, tmp_build):
  # Like the real data: Czech has no test_2017_flickr, so en-cs has no such split (en-de has).
  langs = ('en', 'de', 'cs')
  triples = [(f'a {i}', f'ein {i}', f'jeden {i}') for i in range(4)]
  write_multi30k(
    tmp_path, {'train': triples, 'val': triples, 'test_2016_flickr': triples}, langs=langs
  )
  write_multi30k(tmp_path, {'test_2017_flickr': triples[:2]}, langs=('en', 'de'))
  assert datasets.split_names(_config(tmp_path, 'en', 'de'))[-1] == 'test_2017_flickr'
  config = _config(tmp_path, 'en', 'cs')
  assert datasets.split_names(config) == ['train', 'validation', 'test_2016_flickr']
  with pytest.raises(ValueError, match=r'test_2017_flickr\.cs\.gz'):
    data.load_examples(config, 'test_2017_flickr')


def test_extra_split_is_discovered(tmp_path, tmp_build):
  write_multi30k(
    tmp_path, {'train': toy_pairs(7), 'val': toy_pairs(3), 'test_2099_extra': toy_pairs(2)}
  )
  write_gz(tmp_path / 'multi30k' / 'test_2100_one_side.en.gz', ['only english'])
  config = _config(tmp_path)
  builder = data.build(config)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
    'train': 7,
    'validation': 3,
    'test_2099_extra': 2,
  }
  assert data.load_examples(config, 'test_2099_extra')[1]['source'] == toy_pairs(2)[1][0]


def test_missing_data_dir_says_how_to_get_data(tmp_path):
  with pytest.raises(FileNotFoundError, match='ATTNLAB_DATA_DIR') as err:
    data.build(_config(tmp_path / 'nowhere'))
  assert 'nowhere/multi30k' in str(err.value)


def test_missing_split_file_is_named(tmp_path, tmp_build):
  write_multi30k(tmp_path, {'train': toy_pairs(4)})
  with pytest.raises(FileNotFoundError, match=r'val\.en\.gz'):
    data.build(_config(tmp_path))


def test_line_count_mismatch_names_both_files_and_counts(tmp_path, tmp_build):
  write_multi30k(tmp_path, {'train': toy_pairs(5), 'val': toy_pairs(2)})
  write_gz(tmp_path / 'multi30k' / 'train.de.gz', [p[1] for p in toy_pairs(4)])
  with pytest.raises(ValueError) as err:
    data.build(_config(tmp_path))
  message = str(err.value)
  for part in ('train.en.gz', 'train.de.gz', '5 lines', 'has 4'):
    assert part in message


def test_empty_and_non_utf8_lines_are_skipped_and_counted(tmp_path, tmp_build, caplog):
  pairs = toy_pairs(6)
  write_multi30k(tmp_path, {'train': pairs, 'val': toy_pairs(2)})
  en = [p[0].encode() for p in pairs]
  en[1] = b'   '  # empty after stripping
  en[4] = b'caf\xe9 latin-1 bytes'  # not UTF-8
  write_gz(tmp_path / 'multi30k' / 'train.en.gz', None, raw=b'\n'.join(en) + b'\n')
  src, tgt = (tmp_path / 'multi30k' / f'train.{l}.gz' for l in ('en', 'de'))
  kept, skipped = multi30k.read_pairs(src, tgt)
  assert skipped == 2 and [i for i, _, _ in kept] == [0, 2, 3, 5]
  config = _config(tmp_path)
  with caplog.at_level(logging.WARNING):
    builder = data.build(config)
  assert builder.info.splits['train'].num_examples == 4
  assert builder.info.metadata['skipped_train'] == 2
  assert 'skipped 2 pairs' in caplog.text
  examples = data.load_examples(config, 'train')
  assert [ex['index'] for ex in examples] == [0, 2, 3, 5]  # original line numbers survive
  assert examples[2]['target'] == pairs[3][1]


def test_unknown_language_lists_choices(tmp_path):
  with pytest.raises(ValueError, match='valid choices'):
    data.build(_config(tmp_path, 'en', 'xx'))


class _FakeDownloads:
  """Stands in for tfds's download manager: serves upstream URLs from a local mirror."""

  def __init__(self, mirror):
    self.mirror, self.urls = mirror, []

  def download(self, urls):
    self.urls.extend(urls)
    return [self.mirror / url.rsplit('/', 1)[1] for url in urls]


def test_download_path_fetches_upstream_files(tmp_path, monkeypatch):
  from train.data import paths

  monkeypatch.setattr(paths, 'require_online', lambda url, what: None)  # the fake is "online"
  mirror = (
    write_multi30k(
      tmp_path,
      {
        prefix: toy_pairs(3)
        for prefix in ('train', 'val', 'test_2016_flickr', 'test_2017_flickr', 'test_2017_mscoco')
      },
    )
    / 'multi30k'
  )
  builder = multi30k.Multi30k(
    config='en-de', data_dir=tmp_path / 'build', file_format='array_record'
  )  # no raw_dir: download
  fake = _FakeDownloads(mirror)
  generators = builder._split_generators(fake)  # pylint: disable=protected-access
  assert set(generators) == {
    'train',
    'validation',
    'test_2016_flickr',
    'test_2017_flickr',
    'test_2017_mscoco',
  }
  assert 'https://github.com/multi30k/dataset/raw/master/data/task1/raw/val.de.gz' in fake.urls
  key, example = next(iter(generators['validation']))
  assert key == 0 and example['target'] == toy_pairs(3)[0][1]

"""Text corpus: builder splits and skip counts on a tiny file; raw line iterator; real line
count."""

import pytest

from data_testutil import make_config, write_gz
from train import data
from train.data import text


def _tiny_corpus(root, n=250, bad=(5, 101)):
  lines = [f'line number {i} of the corpus'.encode() for i in range(n)]
  for i in bad:
    lines[i] = b'\xff\xfe broken' if i % 2 else b''
  write_gz(root / 'text' / text.FILENAME, None, raw=b'\n'.join(lines) + b'\n')
  return root


def test_builder_splits_and_skips(tmp_path, tmp_build):
  root = _tiny_corpus(tmp_path)
  config = make_config(name='text', data_dir=str(root))
  builder = data.build(config)
  # Lines 0, 100, 200 are validation; 5 (empty) and 101 (not UTF-8) are skipped from train.
  assert builder.info.splits['validation'].num_examples == 3
  assert builder.info.splits['train'].num_examples == 250 - 3 - 2
  assert builder.info.metadata['skipped_train'] == 2
  val = data.load_examples(config, 'validation')
  assert [ex['index'] for ex in val] == [0, 100, 200]
  assert val[1] == {'index': 100, 'source': '', 'target': 'line number 100 of the corpus'}


def test_load_text_lines_skips_bad_lines_and_stops(tmp_path):
  root = _tiny_corpus(tmp_path, n=12, bad=(3,))
  lines = list(data.load_text_lines(root))
  assert len(lines) == 11 and lines[3] == 'line number 4 of the corpus'
  assert list(data.load_text_lines(str(root), max_lines=2)) == lines[:2]


def test_missing_corpus_says_how_to_get_it(tmp_path):
  (tmp_path / 'text').mkdir()
  with pytest.raises(FileNotFoundError, match='ATTNLAB_DATA_DIR'):
    next(data.load_text_lines(tmp_path))


def test_real_corpus_line_count(shared_data):
  assert sum(1 for _ in data.load_text_lines(shared_data)) == 742_144


def test_text8_download_path_cuts_lines(tmp_path, monkeypatch):
  from train.data import paths

  monkeypatch.setattr(paths, 'require_online', lambda url, what: None)  # the fake is "online"
  import zipfile

  words = [f'w{i}' for i in range(2500)]
  archive = tmp_path / 'text8.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    z.writestr('text8', ' ' + ' '.join(words))
  lines = list(text.iter_text8_lines(archive))
  assert [i for i, _ in lines] == [0, 1, 2] and lines[2][1].split() == words[2000:]

  class FakeDownloads:
    def download(self, url):
      assert url == text.TEXT8_URL
      return archive

  builder = text.Text(data_dir=tmp_path / 'build', file_format='array_record')
  generators = builder._split_generators(FakeDownloads())  # pylint: disable=protected-access
  assert [k for k, _ in generators['train']] == [1, 2]  # line 0 is validation

"""train.data.paths.write_atomic: all or nothing, and shareable permissions."""
import os
import stat

import pytest

from train.data import paths


def test_write_atomic_replaces_whole_file_with_0644_and_leaves_no_temp(tmp_path):
  target = tmp_path / 'sub' / 'results.json'
  paths.write_atomic(target, b'{"a": 1}')
  paths.write_atomic(target, b'{"a": 2}')
  assert target.read_bytes() == b'{"a": 2}'
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
  assert os.listdir(target.parent) == ['results.json']


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
  target = tmp_path / 'results.json'
  paths.write_atomic(target, b'old')
  with pytest.raises(TypeError):
    paths.write_atomic(target, 'not bytes')
  assert target.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['results.json']

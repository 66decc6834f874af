"""One set of data / build directory defaults (the Makefile sets neither), and the offline
failure: one line naming the directory, the variable, the flag and the upstream URL, no retries."""

import subprocess
import sys
import time

import pytest

from data_testutil import REPO, make_config
from train import data
from train.data import multi30k
from train.data import paths


def test_defaults_are_the_checkouts_without_any_environment(monkeypatch):
  monkeypatch.delenv(paths.BUILD_ENV, raising=False)
  monkeypatch.delenv(paths.DATA_ENV, raising=False)
  assert paths.build_dir() == REPO / '.cache' / 'attnlab'
  shared = REPO.parent / 'shared' / 'data'
  assert paths.data_root() == (shared if shared.is_dir() else None)
  monkeypatch.setenv(paths.BUILD_ENV, '/x/build')
  monkeypatch.setenv(paths.DATA_ENV, '/x/data')
  assert paths.build_dir() == paths.pathlib.Path('/x/build')
  assert paths.data_root() == paths.pathlib.Path('/x/data')
  assert paths.data_root('/y') == paths.pathlib.Path('/y')  # config.data.data_dir wins


def test_make_passes_the_environment_on_and_sets_no_default():
  """`make -n` shows what make would run: no directory of its own on any command line."""
  out = subprocess.run(
    ['make', '-n', 'train', 'PY=python'],
    cwd=REPO,
    capture_output=True,
    text=True,
    env={'PATH': '/usr/bin:/bin', 'HOME': '/tmp'},
  )
  assert 'ATTNLAB' not in out.stdout
  makefile = (REPO / 'Makefile').read_text()
  assert 'ATTNLAB_BUILD_DIR ?=' not in makefile and 'ATTNLAB_DATA_DIR ?=' not in makefile


def test_offline_without_data_fails_fast_in_one_line(monkeypatch, tmp_build):
  monkeypatch.delenv(paths.DATA_ENV, raising=False)
  monkeypatch.setattr(paths, 'DEFAULT_DATA_DIR', tmp_build / 'no-shared-data')
  monkeypatch.setattr(multi30k, 'URL', 'https://attnlab-offline.invalid/{prefix}.{lang}.gz')
  start = time.time()
  with pytest.raises(paths.DataUnavailable) as err:
    data.build(make_config(name='multi30k', src='en', tgt='de'))
  message = str(err.value)
  assert time.time() - start < 30  # DNS failure, then no retry loop (tfds would retry 20 times)
  assert '\n' not in message
  for part in (
    'no-shared-data/multi30k',
    'ATTNLAB_DATA_DIR',
    '--config.data.data_dir',
    'attnlab-offline.invalid/train.en.gz',
  ):
    assert part in message


def test_prepare_cli_offline_prints_one_line_and_exits_1(tmp_path):
  env = {
    'PATH': '/usr/bin:/bin',
    'HOME': str(tmp_path),
    'PYTHONPATH': str(REPO),
    'ATTNLAB_BUILD_DIR': str(tmp_path / 'build'),
    'JAX_PLATFORMS': 'cpu',
  }
  code = (
    'import sys; from train.data import paths, multi30k; '
    'paths.DEFAULT_DATA_DIR = paths.pathlib.Path(sys.argv[1]); '
    "multi30k.URL = 'https://attnlab-offline.invalid/{prefix}.{lang}.gz'; "
    "sys.argv = sys.argv[:1] + ['--config=configs/multi30k.py']; "
    'from train.data import prepare; prepare.run_cli()'
  )
  p = subprocess.run(
    [sys.executable, '-c', code, str(tmp_path / 'none')],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )
  assert p.returncode == 1, p.stderr[-2000:]
  errors = [line for line in p.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'ATTNLAB_DATA_DIR' in errors[0], p.stderr[-2000:]
  assert 'Traceback' not in p.stderr


def test_a_configured_data_dir_that_is_missing_names_variable_flag_and_upstream(tmp_path):
  """The other offline failure: a data root that is set but lacks the corpus."""
  from train.data import datasets, text

  config = make_config()
  config.data.data_dir = str(tmp_path)
  for name, source, call in (
    ('multi30k', multi30k.HOMEPAGE, lambda: datasets.builder_key(config)),
    ('text', text.TEXT8_URL, lambda: text.local_file(tmp_path)),
  ):
    with pytest.raises(FileNotFoundError) as e:
      call()
    message = str(e.value)
    assert str(tmp_path / name) in message and source in message
    assert 'ATTNLAB_DATA_DIR' in message and '--config.data.data_dir' in message

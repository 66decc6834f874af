"""Fixtures for train.data tests: where the real corpora are, a build dir shared by the session,
small configs, and tiny corpora written into tmp dirs."""

import os

import pytest

from data_testutil import REPO
from data_testutil import make_config

from train.data import paths

SHARED = paths.data_root() or REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session', autouse=True)
def build_dir(tmp_path_factory):
  """Builds go where train.main's go ($ATTNLAB_BUILD_DIR, else the checkout's .cache/attnlab),
  so runs reuse them; ATTNLAB_TEST_FRESH_BUILD=1 uses a session tmp dir instead."""
  if not os.environ.get('ATTNLAB_TEST_FRESH_BUILD'):
    yield paths.build_dir()
    return
  path = tmp_path_factory.mktemp('attnlab_build')
  os.environ['ATTNLAB_BUILD_DIR'] = str(path)
  yield path
  os.environ.pop('ATTNLAB_BUILD_DIR', None)


@pytest.fixture(scope='session')
def shared_data():
  if not (SHARED / 'multi30k' / 'train.en.gz').is_file():
    pytest.skip(
      f'real corpora not found at {SHARED}: set ATTNLAB_DATA_DIR to a directory laid '
      'out like ../shared/data (multi30k/, text/, word_eval/)'
    )
  return SHARED


@pytest.fixture(scope='session')
def multi30k_config(shared_data):
  """Real Multi30K en-de with a BPE vocabulary (BPE trains in about a second)."""
  return make_config(
    name='multi30k',
    src='en',
    tgt='de',
    data_dir=str(shared_data),
    tokenizer='bpe',
    vocab_size=8000,
    batch_size=32,
  )


@pytest.fixture(scope='session')
def multi30k_tokenizer(multi30k_config):
  from train import data

  return data.get_tokenizer(multi30k_config)


@pytest.fixture
def tmp_build(tmp_path, monkeypatch):
  """A build dir for tests that build datasets from throwaway corpora (keeps the shared one
  clean: gzip headers carry a timestamp, so each run's corpus would get a new fingerprint)."""
  path = tmp_path / 'build'
  monkeypatch.setenv('ATTNLAB_BUILD_DIR', str(path))
  return path

"""`python -m train.data.prepare`: builds dataset + tokenizer, prints counts, idempotent."""

import importlib.util
import os
import subprocess
import sys

import pytest

from data_testutil import REPO
from train.data import prepare

CONFIG = """
import ml_collections
def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(name="lengthgen", task="copy", num_train=100,
                                          num_eval=20, tokenizer="char"))
  return c
"""


def test_cli_prints_counts_and_is_idempotent(tmp_path, monkeypatch):
  (tmp_path / 'tiny.py').write_text(CONFIG)
  build = tmp_path / 'build'
  env = {**os.environ, 'ATTNLAB_BUILD_DIR': str(build)}
  result = subprocess.run(
    [sys.executable, '-m', 'train.data.prepare', f'--config={tmp_path / "tiny.py"}'],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert 'train' in result.stdout and '100 examples' in result.stdout
  assert 'tokenizer char, vocab_size=41' in result.stdout  # 4 specials + a-z, 0-9, '+'
  files = {
    p: p.stat().st_mtime_ns for p in build.rglob('*') if p.is_file() and 'locks' not in p.parts
  }
  # A second run (in-process here) finds everything built and rewrites nothing.
  monkeypatch.setenv('ATTNLAB_BUILD_DIR', str(build))
  spec = importlib.util.spec_from_file_location('tiny_config', tmp_path / 'tiny.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  summary = prepare.prepare(module.get_config())
  assert summary['splits'] == {'train': 100, 'validation': 20, 'test': 20}
  assert {
    p: p.stat().st_mtime_ns for p in build.rglob('*') if p.is_file() and 'locks' not in p.parts
  } == files


@pytest.mark.slow
def test_default_multi30k_config(shared_data):
  path = REPO / 'configs' / 'multi30k.py'
  if not path.is_file():
    pytest.skip('configs/multi30k.py not written yet')
  spec = importlib.util.spec_from_file_location('multi30k_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = str(shared_data)
  config.data.tokenizer = 'bpe'  # 1 s instead of 16 s CPU for unigram; both are tested elsewhere
  summary = prepare.prepare(config)
  assert summary['splits']['train'] == 29000 and summary['splits']['validation'] == 1014
  assert summary['skipped']['train'] == 0

"""`python -m train.data.prepare`: builds dataset + tokenizer, prints counts, idempotent."""
import importlib.util
import os
import subprocess
import sys

import pytest

from data_testutil import REPO
from train.data import prepare

CONFIG = '''
import ml_collections
def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(name="lengthgen", task="copy", num_train=100,
                                          num_eval=20, tokenizer="char"))
  return c
'''


def test_cli_prints_counts_and_is_idempotent(tmp_path, build_dir):
  (tmp_path / "tiny.py").write_text(CONFIG)
  env = {**os.environ, "ATTNLAB_BUILD_DIR": str(tmp_path / "build")}
  run = lambda: subprocess.run(
      [sys.executable, "-m", "train.data.prepare", f"--config={tmp_path / 'tiny.py'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  first = run()
  assert first.returncode == 0, first.stderr
  assert "train" in first.stdout and "100 examples" in first.stdout
  assert "tokenizer char, vocab_size=41" in first.stdout
  files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "build").rglob("*") if p.is_file())
  second = run()
  assert second.returncode == 0, second.stderr
  summary = lambda out: [l for l in out.splitlines() if not l.startswith(("Download", "Dataset",
                                                                           "time"))]
  assert summary(second.stdout) == summary(first.stdout)  # tfds's build notes and timing aside
  assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "build").rglob("*")
                if p.is_file()) == files  # nothing rebuilt


@pytest.mark.slow
def test_default_multi30k_config(shared_data):
  path = REPO / "configs" / "multi30k.py"
  if not path.is_file():
    pytest.skip("configs/multi30k.py not written yet")
  spec = importlib.util.spec_from_file_location("multi30k_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = str(shared_data)
  summary = prepare.prepare(config)
  assert summary["splits"]["train"] == 29000 and summary["splits"]["validation"] == 1014
  assert summary["skipped"]["train"] == 0

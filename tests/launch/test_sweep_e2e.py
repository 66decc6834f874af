"""launch.sweep + launch.report end to end with the real train.main and train.evaluate.

Two tiny length-generalization runs (a few hundred parameters' worth of work each): sweep,
report, re-run skips both; a run stopped mid-training resumes from its checkpoint on re-run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_CONFIG = """
from configs import common

def get_config(arg=None):
  c = common.base_config()
  c.total_steps, c.batch_size = 24, 16
  c.checkpoint_every, c.eval_every, c.log_every = 4, 12, 4
  c.data.name, c.data.task, c.data.tokenizer = 'lengthgen', 'copy', 'char'
  c.data.train_max_len, c.data.test_max_len = 4, 6
  c.data.num_train, c.data.num_eval = 64, 12
  c.data.max_src_len = c.data.max_tgt_len = 16
  c.data.bucket_boundaries = (16,)  # one shape: one compile
  c.data.eval_splits = ('validation', 'test')
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.d_ff = 16, 2, 1, 32
  c.model.max_len = 32
  c.optim.warmup_steps = 4
  c.eval.decode, c.eval.bleu_sentences, c.eval.batch_size = 'greedy', 0, 16
  c.eval.max_len_margin = 4
  return c

def sweep(name):
  if name == 'smoke':
    return [{'model.position': p} for p in ('sinusoidal', 'rotary')]
  raise ValueError(f'unknown sweep {name!r}; valid: smoke')
"""


def _env(tmp_path):
  env = dict(os.environ)
  env.update(
    XLA_FLAGS=xla_flags(1),
    JAX_PLATFORMS='cpu',
    ATTNLAB_BUILD_DIR=str(tmp_path / 'build'),
    PYTHONPATH=REPO,
  )
  return env


def _sweep(config, root, env, wait=True):
  cmd = [
    sys.executable,
    '-m',
    'launch.sweep',
    f'--config={config}',
    '--sweep=smoke',
    f'--root={root}',
    '--parallel=2',
    '--eval_splits=test',
  ]
  if not wait:
    return subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_real_sweep_report_skip_and_resume(tmp_path):
  config = tmp_path / 'tiny_lengthgen.py'
  config.write_text(TINY_CONFIG)
  env, root = _env(tmp_path), tmp_path / 'root'
  first_run, second_run = root / 'model.position-sinusoidal', root / 'model.position-rotary'

  # Stop the sweep (SIGTERM, as a scheduler would) once the first run has its first checkpoint.
  proc = _sweep(config, root, env, wait=False)
  deadline = time.time() + 300
  ckpts = first_run / 'checkpoints'
  while not (ckpts.is_dir() and any(n.isdigit() for n in os.listdir(ckpts))):
    assert proc.poll() is None, proc.communicate()[0]
    assert time.time() < deadline, 'no checkpoint within 300 s'
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1 and '[stopped] model.position-sinusoidal' in out, out
  assert not (first_run / 'DONE.json').exists()

  result = _sweep(config, root, env)
  assert result.returncode == 0, result.stdout + (first_run / 'sweep.log').read_text()[-3000:]
  assert 'resumed from step' in (first_run / 'sweep.log').read_text()
  for run in (first_run, second_run):
    done = json.loads((run / 'DONE.json').read_text())
    assert sorted(done['results']) == ['test']
    test = json.loads((run / done['results']['test']).read_text())
    assert test['split'] == 'test' and 0.0 <= test['exact_match'] <= 1.0
    assert sorted(int(n) for n in test['exact_match_by_length']) == list(range(1, 7))

  again = _sweep(config, root, env)
  assert again.returncode == 0 and '2 already done, 0 to run' in again.stdout

  report = subprocess.run(
    [sys.executable, '-m', 'launch.report', str(root)],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert report.returncode == 0, report.stderr
  md = (root / 'report.md').read_text()
  assert '| model.position=sinusoidal | 1 |' in md and '| model.position=rotary | 1 |' in md
  for name in (
    'report.csv',
    'plots/exact_match-test.png',
    'plots/length-test.png',
    'plots/target_length-test.png',
    'plots/curves-eval_loss.png',
    'plots/curves-train_loss.png',
  ):
    assert (root / name).stat().st_size > 0, name

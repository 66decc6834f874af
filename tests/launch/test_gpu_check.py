"""launch.gpu_check --dry_run on CPU: every stage runs and the summary has every table."""

import json
import os
import subprocess
import sys

import pytest

from launch import gpu_check
from tests.xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pytest_counts_reads_the_last_summary_line():
  text = 'x\n3 passed, 1 failed, 2 skipped in 4.1s\n'
  assert gpu_check.pytest_counts(text) == {'passed': 3, 'failed': 1, 'skipped': 2}
  assert gpu_check.pytest_counts('no summary') == {}


def test_real_run_covers_both_sizes_both_kernels_and_bf16():
  assert set(gpu_check.SWEEPS) == {'small', 'base'}
  for sweep in gpu_check.SWEEPS.values():
    assert 'attention_impl=xla' in sweep and 'attention_impl=cudnn' in sweep
  assert '--config.model.dtype=bfloat16' in gpu_check.BENCH_ARGS
  for path in gpu_check.GPU_TESTS + gpu_check.SHARDING_TESTS[:1]:
    assert os.path.exists(os.path.join(REPO, path)), path


@pytest.mark.slow  # ~40-70 s on 2 CPU cores: two benchmark processes, each compiling 2 settings
def test_dry_run_on_cpu(tmp_path):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  cmd = [sys.executable, '-m', 'launch.gpu_check', f'--out={tmp_path}', '--dry_run']
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = json.loads((tmp_path / 'summary.json').read_text())
  status = {s['name']: s['status'] for s in summary['stages']}
  assert status == {
    'install': 'skipped (dry run)',
    'tests_gpu': 'ok',
    'bench_small': 'ok',
    'bench_base': 'ok',
  }, status
  assert summary['env']['backend'] == 'cpu'
  tests = next(s for s in summary['stages'] if s['name'] == 'tests_gpu')
  assert tests['counts'].get('passed', 0) > 0 and not tests['counts'].get('failed')
  for size in ('small', 'base'):
    runs = summary['bench'][size]['runs']
    assert [r['setting'] for r in runs] == ['attention_impl=xla', 'attention_impl=einsum']
    for r in runs:
      assert 'error' not in r, r['error']
      assert r['train']['tokens_per_s'] > 0 and r['train']['mfu'] > 0
      assert r['decode']['beam_cached']['sentences_per_s'] > 0
  md = (tmp_path / 'summary.md').read_text()
  assert '## size=small' in md and '## size=base' in md and '| attention_impl=einsum |' in md
  files = sorted(os.listdir(tmp_path))
  assert len(files) <= 8 and all(os.path.isfile(tmp_path / f) for f in files), files

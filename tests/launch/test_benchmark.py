"""launch.benchmark: the CLI on a shrunken tiny config (JSON keys, positive numbers, never speed),
the helpers it is built from, and that uncached decoding reproduces cached decoding exactly."""

import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn
from ml_collections import ConfigDict

import model
from train import metrics
from launch import benchmark
from launch import measure
from model import decoding
from model import vocab
from tests.xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The CLI on the tiny config's synthetic rows; cheaper XLA codegen, as these tests check the
# JSON and tables, not speed, and compiling dominates them.
CLI = [
  sys.executable,
  '-m',
  'launch.benchmark',
  '--config=configs/multi30k.py:size=tiny',
  '--data=synthetic',
  '--synthetic_len=8',
]
ENV = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
SHRINK = [
  '--config.model.d_model=32',
  '--config.model.d_ff=64',
  '--config.model.num_layers=1',
  '--config.model.num_heads=2',
  '--config.data.vocab_size=64',
  '--config.batch_size=8',
]


@pytest.mark.slow  # ~60 s of CPU: one train-step and four decoder compiles in a subprocess
def test_cli_tiny_config_json(tmp_path):
  out = tmp_path / 'bench.json'
  cmd = (
    CLI
    + [
      '--steps=2',
      '--decode_len=8',
      '--decode_batch=2',
      '--decode_repeats=1',
      '--sweep=model.position=rotary',
      f'--json={out}',
    ]
    + SHRINK
  )
  proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '| position=rotary |' in proc.stdout and '| faults/step |' in proc.stdout
  result = json.loads(out.read_text())
  assert result['peak_flops_per_s'] > 0 and result['machine']['platform'] == 'cpu'
  assert [r['overrides'] for r in result['runs']] == [{'model.position': 'rotary'}]
  for r in result['runs']:
    assert 'error' not in r, r.get('error')
    t = r['train']
    for key in (
      'compile_s',
      'step_s',
      'step_cpu_s',
      'tokens_per_s',
      'flops_per_s',
      'executed_flops_per_s',
      'mfu',
      'executed_mfu',
      'cpu_time_mfu',
      'host_s',
      'params',
      'matmul_flops_per_s',
    ):
      assert t[key] > 0, key
    assert t['minor_faults_per_step'] >= 0  # counted on every Unix (resource.getrusage)
    assert t['padding_fraction'] == 0.0  # synthetic rows are all real tokens
    assert t['target_tokens_per_step'] == 8 * 8
    for key in ('greedy_cached', 'greedy_uncached', 'beam_cached', 'beam_uncached'):
      d = r['decode'][key]
      assert d['sentences_per_s'] > 0 and d['tokens_per_s'] > 0 and d['compile_s'] >= 0
      assert d['tokens_per_sentence'] == 8  # EOS held back until decode_len
    assert r['decode']['greedy_speedup'] > 0 and r['decode']['beam_speedup'] > 0


def test_parse_overrides_and_errors():
  assert benchmark.parse_overrides('model.position=t5,model.num_kv_heads=1; seed=2') == [
    {'model.position': 't5', 'model.num_kv_heads': 1},
    {'seed': 2},
  ]
  with pytest.raises(ValueError, match='key=value'):
    benchmark.parse_overrides('model.position')
  config = ConfigDict({'model': {'position': 'none'}, 'seed': 0})
  assert benchmark.apply_overrides(config, {'model.position': 't5'}).model.position == 't5'
  assert config.model.position == 'none'  # the original is untouched
  with pytest.raises(ValueError, match=r"model has \['position'\]"):
    benchmark.apply_overrides(config, {'model.postion': 't5'})


def test_segment_lengths_and_useful_flops_of_packed_rows():
  # Row 0 packs two sentences (src 3 / tgt 2 and src 1 / tgt 3); row 1 holds one (src 2 / tgt 4).
  tseg = np.array([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0]], np.int32)
  sseg = np.array([[1, 1, 1, 2, 0, 0], [1, 1, 0, 0, 0, 0]], np.int32)
  batch = {
    'targets': (tseg > 0).astype(np.int32),
    'targets_segment': tseg,
    'inputs': (sseg > 0).astype(np.int32),
    'inputs_segment': sseg,
    'weights': (tseg > 0).astype(np.float32),
  }
  assert sorted(measure.segment_lengths(batch)) == [(1, 3), (2, 4), (3, 2)]
  cfg = ConfigDict(
    {
      'arch': 'encoder_decoder',
      'vocab_size': 50,
      'd_model': 8,
      'num_heads': 2,
      'num_layers': 1,
      'd_ff': 16,
    }
  )
  expected = sum(metrics.flops_per_token(cfg, s, t) * t for s, t in [(1, 3), (2, 4), (3, 2)])
  assert measure.useful_flops(cfg, batch) == pytest.approx(expected)


def test_fixed_length_holds_eos_back_to_the_last_step():
  cfg = ConfigDict(
    {
      'arch': 'encoder_decoder',
      'vocab_size': 40,
      'd_model': 16,
      'num_heads': 2,
      'num_layers': 1,
      'd_ff': 32,
      'dropout': 0.0,
    }
  )
  module = model.build_model(cfg)
  inputs = np.random.default_rng(0).integers(4, 40, (3, 5)).astype(np.int32)
  params = nn.unbox(
    module.init(jax.random.key(0), {'inputs': inputs, 'decoder_inputs': inputs})['params']
  )
  for cached in (True, False):
    out = decoding.generate(
      measure.FixedLength(module, cached=cached),
      params,
      {'inputs': inputs},
      method='greedy',
      max_len=7,
    )
    assert (out[:, :-1] != vocab.EOS).all() and (out[:, -1] == vocab.EOS).all()


def test_named_sweep_runs_once_per_setting(tmp_path):
  path = tmp_path / 'cfg.py'
  path.write_text(
    'def get_config(arg=None):\n  return None\n\n'
    'def sweep(name):\n'
    '  return [{"model.position": p, "seed": s} for p in ("none", "t5") for s in (0, 1)]\n'
  )
  assert benchmark.sweep_runs(f'{path}:size=tiny', 'positions') == [
    {'model.position': 'none'},
    {'model.position': 't5'},
  ]
  assert benchmark.sweep_runs(str(path), None) == [{}]
  assert benchmark.sweep_runs(str(path), 'seed=3;seed=4') == [{'seed': 3}, {'seed': 4}]


def test_op_profile_finds_the_matmul_of_a_named_scope(tmp_path):
  import jax
  import jax.numpy as jnp
  from launch import op_profile

  def f(x, w):
    with jax.named_scope('ffn'):
      return jnp.tanh(x @ w).sum()

  x, w = jnp.ones((256, 256)), jnp.ones((256, 256)) * 1e-3
  fn = jax.jit(f).lower(x, w).compile()
  trace = op_profile.trace_steps(lambda: fn(x, w), 3, str(tmp_path))
  seconds = op_profile.breakdown(trace, fn.as_text())
  assert seconds.get('feed-forward (dot)', 0) > 0, seconds
  assert abs(sum(op_profile.shares(seconds).values()) - 1) < 1e-9
  assert op_profile.category('copy.3', '') == 'layout copies'
  assert (
    op_profile.category('fusion.2', 'jit(step)/dropout/jit(_bernoulli)/x') == 'dropout bits (other)'
  )


class _FakeClock:
  """A clock that advances only when a timed function runs (by what it says it costs)."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_alternate_swaps_the_order_every_pair_and_times_each_call():
  clock, calls = _FakeClock(), []

  def side(name, cost):
    def fn(i):
      calls.append((name, i))
      clock.now += cost(i)

    return fn

  ta, tb = measure.alternate(
    side('a', lambda i: 1.0 + i), side('b', lambda i: 3.0 * (1.0 + i)), 4, clock=clock
  )
  assert calls == [('a', 0), ('b', 0), ('b', 1), ('a', 1), ('a', 2), ('b', 2), ('b', 3), ('a', 3)]
  assert ta == [1.0, 2.0, 3.0, 4.0] and tb == [3.0, 6.0, 9.0, 12.0]
  r = measure.pair_ratios(ta, tb)
  assert r['median'] == r['q1'] == r['q3'] == pytest.approx(3.0) and r['pairs'] == 4


def test_pair_ratios_are_median_and_quartiles_of_the_per_pair_speedups():
  rng = np.random.default_rng(0)
  ta = rng.uniform(0.5, 1.5, 9)
  tb = ta * rng.uniform(1.2, 1.8, 9)
  r = measure.pair_ratios(list(ta), list(tb))
  ratios = tb / ta
  assert r['median'] == pytest.approx(np.median(ratios))
  # the inclusive method is NumPy's default ('linear') percentile
  q1, q3 = np.percentile(ratios, [25, 75])
  assert (r['q1'], r['q3']) == (pytest.approx(q1), pytest.approx(q3))
  # few, far-apart pairs: the quartiles stay within the ratios seen (no extrapolation below 0)
  for ta, tb in (([1.0, 1.0], [0.1, 5.0]), ([1.0, 1.0, 1.0], [0.2, 3.0, 9.0])):
    r = measure.pair_ratios(ta, tb)
    assert min(tb) <= r['q1'] <= r['median'] <= r['q3'] <= max(tb)
    assert (r['q1'], r['q3']) == tuple(pytest.approx(q) for q in np.percentile(tb, [25, 75]))
  assert measure.pair_ratios([2.0], [3.0]) == {'median': 1.5, 'q1': 1.5, 'q3': 1.5, 'pairs': 1}
  with pytest.raises(ValueError, match='equally many'):
    measure.pair_ratios([1.0, 2.0], [1.0])


@pytest.mark.slow  # ~20 s: two settings' train steps and greedy decoders, compiled once each
def test_cli_paired_sweep_reports_each_setting_against_the_first(tmp_path):
  out = tmp_path / 'bench.json'
  cmd = (
    CLI
    + [
      '--steps=1',
      '--decode=greedy',
      '--cache=cached',
      '--decode_len=8',
      '--decode_batch=2',
      '--decode_repeats=1',
      '--sweep=model.position=rotary;model.position=none',
      '--pairs=3',
      '--decode_pairs=2',
      '--compile_cache',  # the paired sides compile what the per-setting runs compiled
      f'--json={out}',
    ]
    + SHRINK
  )
  proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'Paired against position=rotary' in proc.stdout
  (row,) = json.loads(out.read_text())['paired']
  assert (row['setting'], row['baseline']) == ('position=none', 'position=rotary')
  assert row['train']['pairs'] == 3 and row['greedy_cached']['pairs'] == 2
  for key in ('train', 'greedy_cached'):
    assert 0 < row[key]['q1'] <= row[key]['median'] <= row[key]['q3']

  # One setting cannot be paired: a usage error that says what --pairs needs.
  bad = [c for c in cmd if not c.startswith('--sweep')]
  proc = subprocess.run(bad, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and 'at least two settings' in proc.stderr


def test_paired_row_compares_seconds_per_real_token_and_decode_seconds(monkeypatch):
  """B's speed-up over A per pair: training per real target token (B's batches hold twice the
  tokens, so equal step times are a 2x speed-up), decoding per call."""
  calls = []

  def side(tokens, step_s, decode_s):
    s = object.__new__(benchmark._Side)
    s.tokens = tokens
    s.stepper = type('Stepper', (), {'step': lambda self, i: calls.append(('step', i))})()
    s.decodes = {'beam_cached': lambda: calls.append('decode')}
    s.times = {'step': step_s, 'decode': decode_s}
    return s

  a, b = (
    side([10.0, 20.0], [1.0, 2.0, 1.0], [4.0, 4.0]),
    side([20.0, 40.0], [1.0, 2.0, 1.0], [1.0, 2.0]),
  )

  def fake_alternate(fa, fb, n):
    for i in range(n):
      fa(i), fb(i)
    kind = 'step' if n == 3 else 'decode'
    return a.times[kind][:n], b.times[kind][:n]

  monkeypatch.setattr(measure, 'alternate', fake_alternate)
  row = benchmark.paired_row(a, b, {'pairs': 3, 'decode_pairs': 2})
  assert row['train'] == {
    'median': 2.0,
    'q1': 2.0,
    'q3': 2.0,
    'pairs': 3,
    'seconds': {'baseline': [1.0, 2.0, 1.0], 'setting': [1.0, 2.0, 1.0]},
  }
  assert row['beam_cached'] == {
    'median': 3.0,
    'q1': 2.5,
    'q3': 3.5,
    'pairs': 2,
    'seconds': {'baseline': [4.0, 4.0], 'setting': [1.0, 2.0]},
  }
  assert calls.count('decode') == 4 and len([c for c in calls if c != 'decode']) == 6
  a.stepper = None  # --train=false: decode pairs only
  row = benchmark.paired_row(a, b, {'pairs': 3, 'decode_pairs': 2})
  assert sorted(row) == ['beam_cached'] and row['beam_cached']['median'] == 3.0


def test_op_profile_counts_a_loop_body_once(tmp_path):
  """A while loop's trace event spans its body's ops, which have events of their own: only the
  body's ops are counted, so the shares are not inflated by the loop's own span."""
  import jax
  import jax.numpy as jnp
  from launch import op_profile

  def f(x, w):
    with jax.named_scope('ffn'):
      return jax.lax.fori_loop(0, 4, lambda i, y: jnp.tanh(y @ w), x).sum()

  x, w = jnp.ones((128, 128)), jnp.ones((128, 128)) * 1e-3
  fn = jax.jit(f).lower(x, w).compile()
  names = op_profile.op_names(fn.as_text())
  assert not any(n.startswith('while') for n in names) and any('dot' in n for n in names)
  trace = op_profile.trace_steps(lambda: fn(x, w), 2, str(tmp_path))
  with gzip.open(trace, 'rt') as fh:
    events = [e for e in json.load(fh)['traceEvents'] if e.get('ph') == 'X']
  loops = [e for e in events if e['name'].startswith('while')]
  assert loops  # XLA kept the loop, and its event spans body ops that have events of their own
  w = loops[0]
  inside = [
    e for e in events
    if e['name'] in names and w['ts'] <= e['ts'] and e['ts'] + e['dur'] <= w['ts'] + w['dur']
  ]  # fmt: skip
  assert any('dot' in e['name'] or 'fusion' in e['name'] for e in inside)
  counted = sum(e['dur'] for e in events if e['name'] in names) * 1e-6
  assert abs(sum(op_profile.breakdown(trace, fn.as_text()).values()) - counted) < 1e-9

"""launch.peer: the side-by-side harness runs end to end on a tiny model (JSON keys and positive
numbers, never speed), and the peer's batch keys are the ones its train.py reads."""

import json
import os
import subprocess
import sys

from flax import jax_utils
import jax
import numpy as np
import pytest

from configs import multi30k
from launch import measure
from launch import peer_model
from launch import peer_source
from tests.xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHRINK = [
  '--config.model.d_model=32',
  '--config.model.d_ff=64',
  '--config.model.num_layers=1',
  '--config.model.num_heads=2',
  '--config.data.vocab_size=64',
  '--config.batch_size=4',
]


@pytest.fixture(scope='module')
def wmt_dir():
  try:
    # the build cache after the first run; else pip download (~40 s)
    return peer_source.fetch_peer()
  except peer_source.PeerUnavailable as e:
    pytest.skip(f'flax sdist not available (offline CI?): {e}')


def test_peer_batch_keys():
  b = {
    k: np.zeros((2, 4), np.int32)
    for k in (
      'inputs',
      'targets',
      'inputs_position',
      'targets_position',
      'inputs_segment',
      'targets_segment',
      'decoder_inputs',
      'weights',
    )
  }
  assert sorted(peer_model.peer_batch(b)) == sorted(
    [
      'inputs',
      'targets',
      'inputs_position',
      'targets_position',
      'inputs_segmentation',
      'targets_segmentation',
    ]
  )


def test_load_peer_takes_train_py_functions_without_tensorflow(wmt_dir):
  ns = peer_source.load_peer(wmt_dir)
  for name in peer_source.TRAIN_PY_NAMES:
    assert callable(getattr(ns, name)), name
  assert ns.train_step.__code__.co_filename.endswith(os.path.join('examples', 'wmt', 'train.py'))
  assert ns.models.__file__.startswith(wmt_dir) and ns.decode.__file__.startswith(wmt_dir)
  # Nothing the timed functions use may be missing; what is missing is only logged.
  for line in ns.missing_imports:
    assert any(m in line for m in ('tensorflow', 'clu')), line


@pytest.mark.slow  # ~40-60 s of CPU: one train-step, two beam and two greedy compiles per side
def test_cli_tiny_end_to_end(tmp_path, wmt_dir):
  out = tmp_path / 'peer.json'
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  cmd = [
    sys.executable,
    '-m',
    'launch.peer',
    '--config=configs/multi30k.py:size=tiny',
    '--data=synthetic',
    '--synthetic_len=8',
    '--repeats=1',
    '--steps=1',
    '--decode_batch=2',
    '--decode_len=4',
    '--decode_repeats=0',
    '--pairs=2',
    '--decode_pairs=1',
    f'--json={out}',
  ] + SHRINK
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '| train, real target tokens/s |' in proc.stdout
  result = json.loads(out.read_text())
  assert result['peer']['source'] == wmt_dir
  for side in ('attnlab', 'flax_wmt'):
    best = result['best'][side]
    assert best['train']['tokens_per_s'] > 0 and best['train']['cpu_time_mfu'] > 0
    for name in ('beam', 'beam_batch1', 'greedy', 'greedy_batch1'):
      assert best[name]['sentences_per_s'] > 0, (side, name)
      assert best[name]['tokens_per_sentence'] == 4  # fixed length on both sides
  assert result['setup']['target_tokens_per_step'] == 4 * 8
  assert all(v > 0 for v in result['ratios'].values())
  # the steps and calls timed in alternating pairs after the rounds
  paired = result['paired']
  assert paired['train']['pairs'] == 2 and paired['beam']['pairs'] == 1
  assert set(paired) == {'train', 'beam', 'beam_batch1', 'greedy', 'greedy_batch1'}
  for p in paired.values():
    assert p['attnlab'] > 0 and p['flax_wmt'] > 0 and 0 < p['q1'] <= p['median'] <= p['q3']
    ta, tb = p['seconds']['attnlab'], p['seconds']['flax_wmt']  # the pairs' own times
    assert len(ta) == len(tb) == p['pairs'] and min(ta + tb) > 0
    assert sorted(b / a for a, b in zip(ta, tb))[(p['pairs'] - 1) // 2] <= p['median']
  assert '| paired ratio |' in proc.stdout
  assert '| greedy decode (flax wmt: beam 1), 1 sentence, sentences/s |' in proc.stdout
  p = result['setup']['params']
  assert 0.5 < p['attnlab'] / p['flax_wmt'] < 2  # the same model, up to each side's details


@pytest.mark.slow  # ~15 s: builds the peer and compiles its decoding at two beam widths
def test_peer_greedy_row_is_its_one_beam_search_and_the_argmax_of_its_forward(wmt_dir):
  """The greedy rows' peer side (`Peer.translate(x, 1)`, its beam search with one beam) gives
  the tokens of greedy decoding by its full forward pass: each token the argmax of the logits
  over the tokens before it, with no EOS (launch.peer holds it back on both sides)."""
  config = multi30k.get_config('size=tiny')
  with config.unlocked():
    config.model.d_model, config.model.d_ff, config.model.num_heads = 32, 64, 2
    config.model.num_layers, config.model.vocab_size, config.batch_size = 1, 64, 8
  batches, _ = measure.synthetic_batches(config, 1, 8)
  peer = peer_model.Peer(peer_source.load_peer(wmt_dir), config, batches, 5, 4)
  src = measure.decode_inputs(config, None, 3, 8)['inputs']
  # Fresh params put token 0 first everywhere; kernels 3x as large give sentences that differ.
  scaled = lambda path, x: x[0] * 3 if path[-1].key == 'kernel' else x[0]  # one replica
  params = jax.tree_util.tree_map_with_path(scaled, peer.state.params)
  peer.state = peer.state.replace(params=jax_utils.replicate(params))
  got = np.asarray(peer.translate(src, 1))
  assert len({tuple(r) for r in got}) == 3 and len(set(got.ravel())) > 3, got
  module = peer.p.models.Transformer(peer.train_config.replace(deterministic=True))
  # Not-yet-decoded positions hold a stand-in token: the causal mask hides them from position
  # t, which must itself be a non-zero token (the full forward masks targets of id 0 as padding).
  want = np.full((3, 5), 7, np.int32)
  for t in range(5):
    logits = module.apply({'params': params}, src, want)  # position t sees want[:, :t]
    want[:, t] = np.argmax(np.asarray(logits)[:, t], axis=-1)
  np.testing.assert_array_equal(got, want)
  assert not np.array_equal(np.asarray(peer.translate(src)), got)  # beam 4 differs here

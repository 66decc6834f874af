"""Lightweight and dynamic convolutions (Wu et al. 2019) against a NumPy reference of the paper's
formulas, and their config rules. Stack-level properties (cached == full, packed == separate,
causal gradients) run with every other kind in test_transformer.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import attention as attn_lib
from model import config as cfg_lib
from model import convolution as conv_lib

D, H = 8, 2


def _cfg(**kw):
  base = dict(vocab_size=16, d_model=D, num_heads=H, d_ff=8, attention='lightconv')
  base.update(scan_layers=False, conv_weight_dropout=0.0)
  base.update(kw)
  return cfg_lib.make_config(base)


def _np_reference(params, x, lengths, size, causal, dynamic):
  """The paper's block on unpacked rows, zero padding at both sequence edges, in float64."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), nn.unbox(params))
  glu_w, glu_b = p['glu']['kernel'], p['glu']['bias']  # [d,2,d], [2,d]
  a = np.einsum('btd,dge->btge', x, glu_w) + glu_b
  h = a[..., 0, :] * (1 / (1 + np.exp(-a[..., 1, :])))  # GLU
  b, t, _ = x.shape
  if dynamic:
    logits = np.einsum('btd,dhk->bthk', h, p['kernel_proj']['kernel'])
  else:
    logits = np.broadcast_to(p['kernel'], (b, t, H, size))
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  first = -(size - 1) if causal else -((size - 1) // 2)
  out = np.zeros((b, t, D))
  c = D // H
  for r in range(b):
    for i in range(lengths[r]):
      for k in range(size):
        j = i + first + k
        if 0 <= j < lengths[r]:
          for head in range(H):
            sl = slice(head * c, (head + 1) * c)
            out[r, i, sl] += w[r, i, head, k] * h[r, j, sl]
  return out @ p['out']['kernel'] + p['out']['bias']


@pytest.mark.parametrize('kind', ['lightconv', 'dynamicconv'])
@pytest.mark.parametrize('size,causal', [(3, False), (4, False), (3, True), (1, True)])
def test_block_matches_numpy_reference(kind, size, causal):
  cfg = _cfg(attention=kind)
  block = conv_lib.Convolution(cfg, attn_lib.KINDS[kind].conv, size, causal)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, D)).astype(np.float32)
  lengths = [6, 4]
  seg = np.array([[1] * 6, [1] * 4 + [0] * 2], np.int32)
  pos = np.tile(np.arange(6, dtype=np.int32), (2, 1))
  params = block.init(jax.random.key(1), x, seg, pos)['params']
  got = np.asarray(block.apply({'params': params}, x, seg, pos))
  want = _np_reference(params, x.astype(np.float64), lengths, size, causal, kind == 'dynamicconv')
  for r, n in enumerate(lengths):
    np.testing.assert_allclose(got[r, :n], want[r, :n], atol=2e-5, rtol=2e-5)


def test_kernel_taps_follow_explicit_positions_and_segments():
  """Band weights: query i gives key j tap k_pos - q_pos - first, only inside its segment."""
  kernel = jnp.asarray([[0.2, 0.3, 0.5]])  # H = 1, K = 3, centred: offsets -1, 0, +1
  seg = jnp.asarray([[1, 1, 1, 2, 2, 0]])
  pos = jnp.asarray([[0, 1, 2, 0, 1, 0]])
  w = np.asarray(conv_lib.band_weights(kernel, seg, pos, seg, pos, first=-1))[0, 0]
  want = np.zeros((6, 6))
  for i, j, tap in [(0, 0, 1), (0, 1, 2), (1, 0, 0), (1, 1, 1), (1, 2, 2), (2, 1, 0), (2, 2, 1)]:
    want[i, j] = kernel[0, tap]
  for i, j, tap in [(3, 3, 1), (3, 4, 2), (4, 3, 0), (4, 4, 1)]:
    want[i, j] = kernel[0, tap]
  np.testing.assert_allclose(w[:5], want[:5])
  assert conv_lib.offsets(4, causal=False) == (-1, 2) and conv_lib.offsets(4, True) == (-3, 0)


def test_dropconnect_is_unbiased_and_active_only_in_training():
  """DropConnect on the normalised kernel: outputs are linear in the kernel, so the mean over
  masks equals the deterministic output; a single training pass differs from it."""
  cfg = _cfg(conv_weight_dropout=0.3)
  block = conv_lib.Convolution(cfg, conv_lib.light_kernel, 5, causal=False, deterministic=False)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 7, D)), jnp.float32)
  seg, pos = jnp.ones((1, 7), jnp.int32), jnp.arange(7)[None]
  params = block.init(jax.random.key(0), x, seg, pos)
  det = block.clone(deterministic=True).apply(params, x, seg, pos)
  run = lambda k: block.apply(params, x, seg, pos, rngs={'dropout': k})
  outs = jax.vmap(run)(jax.random.split(jax.random.key(1), 4000))
  assert float(jnp.abs(outs[0] - det).max()) > 1e-3
  err = jnp.abs(outs.mean(0) - det).max() / (outs.std(0).max() / np.sqrt(4000))
  assert float(err) < 5.0  # within 5 standard errors


def test_cache_holds_the_last_k_minus_1_inputs_per_layer():
  cfg = dict(
    arch='decoder_only',
    vocab_size=16,
    d_model=D,
    num_heads=H,
    num_layers=3,
    d_ff=8,
    attention='dynamicconv',
    position='sinusoidal',
    scan_layers=False,
    conv_kernels=(3, 5),
  )
  m = model.build_model(cfg)
  tok = jnp.ones((2, 1), jnp.int32)
  batch = {'decoder_inputs': tok, 'targets': tok}
  params = m.init(jax.random.key(0), batch)
  _, mut = m.apply(params, tok, tok * 0, tok, None, None, 32, method='decode', mutable=['cache'])
  conv = {name: layer['conv'] for name, layer in mut['cache']['decoder'].items() if 'layer' in name}
  assert {n: c['conv_x'].shape for n, c in conv.items()} == {
    'layer_0': (2, 2, D),
    'layer_1': (2, 4, D),
    'layer_2': (2, 4, D),
  }
  assert all(c['conv_pos'].shape == c['conv_x'].shape[:2] for c in conv.values())


def test_conv_kinds_take_added_positions_and_refuse_the_rest():
  for kind in ('lightconv', 'dynamicconv'):
    assert cfg_lib.UNSUPPORTED[kind] == ('shaw', 't5', 't5_unscaled', 'rotary', 'alibi')
    with pytest.raises(ValueError, match=r"'rotary' is not supported.*\['none', 'sinusoidal'"):
      _cfg(attention=kind, position='rotary')
  with pytest.raises(ValueError, match='widths \\[3, 7\\].*scan_layers=False'):
    _cfg(num_layers=2, scan_layers=True)
  with pytest.raises(ValueError, match='num_kv_heads'):
    _cfg(num_kv_heads=1)
  with pytest.raises(ValueError, match='conv_kernels'):
    _cfg(conv_kernels=(3, 0))
  assert _cfg(num_layers=2, scan_layers=True, conv_kernels=(5,)).kernel_size(1) == 5
  assert _cfg(conv_kernels=(3, 7)).kernel_size(5) == 7

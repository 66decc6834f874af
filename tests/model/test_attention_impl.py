"""model.attention_impl and model.dtype: the kernels agree, bf16 tracks f32, cuDNN's limits are
clear errors, and (on a GPU only) the fused cuDNN kernel matches XLA's in training and decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import decoding

ON_GPU = jax.default_backend() == 'gpu'


def tiny(**kw):
  cfg = dict(
    arch='encoder_decoder',
    vocab_size=32,
    d_model=32,
    num_heads=2,
    num_layers=1,
    d_ff=64,
    dropout=0.0,
    max_len=32,
  )
  cfg.update(kw)
  return cfg


def batch(rows=2, length=8, seed=0):
  """Two sentences packed in row 0 (with padding), one full sentence in row 1."""
  rng = np.random.default_rng(seed)
  seg = np.ones((rows, length), np.int32)
  seg[0, length // 2 :] = 2
  seg[0, -1] = 0
  pos = np.concatenate([np.arange(length // 2), np.arange(length - length // 2)])[None]
  pos = np.repeat(pos, rows, 0).astype(np.int32)
  pos[1] = np.arange(length)
  seg[1] = 1
  tok = rng.integers(3, 32, (rows, length)).astype(np.int32) * (seg > 0)
  return {
    'inputs': tok,
    'inputs_segment': seg,
    'inputs_position': pos,
    'decoder_inputs': tok[:, ::-1].copy() * (seg > 0),
    'targets_segment': seg,
    'targets_position': pos,
  }


def logits_of(cfg, params=None):
  module = model.build_model(cfg)
  b = {k: jnp.asarray(v) for k, v in batch().items()}
  if params is None:
    params = module.init(jax.random.key(0), b)['params']
  return np.asarray(jax.jit(lambda p: module.apply({'params': p}, b))(params), np.float32), params


def test_xla_and_einsum_kernels_agree():
  want, params = logits_of(tiny(attention_impl='einsum'))
  got, _ = logits_of(tiny(attention_impl='xla'), params)
  mask = batch()['targets_segment'] > 0
  np.testing.assert_allclose(got[mask], want[mask], atol=2e-4, rtol=2e-4)


def test_bfloat16_logits_track_float32_and_params_stay_float32():
  want, params = logits_of(tiny())
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  got, _ = logits_of(tiny(dtype='bfloat16'), params)
  mask = batch()['targets_segment'] > 0
  err = np.abs(got[mask] - want[mask]).max()
  assert np.isfinite(got).all() and err < 0.05 * np.abs(want[mask]).max() + 0.05, err


def test_bfloat16_beam_decode_runs_to_length():
  module = model.build_model(tiny(dtype='bfloat16'))
  b = {k: jnp.asarray(v) for k, v in batch().items()}
  params = module.init(jax.random.key(0), b)['params']
  out = decoding.generate(
    module, params, {'inputs': batch()['inputs']}, method='beam', beam_size=2, max_len=6
  )
  assert out.shape == (2, 6) and out.dtype == np.int32


@pytest.mark.parametrize(
  'kw, why',
  [
    (dict(dtype='float32'), 'bfloat16'),
    (dict(attention='additive'), 'additive'),
    (dict(position='shaw'), 'shaw'),
    (dict(attention_dropout=0.1), 'attention_dropout'),
  ],
)
def test_cudnn_rejects_variants_it_cannot_run(kw, why):
  cfg = tiny(attention_impl='cudnn', dtype='bfloat16')
  cfg.update(kw)
  with pytest.raises(ValueError, match=f'cudnn cannot run.*{why}'):
    model.build_model(cfg)


def test_cudnn_accepts_dot_and_shared_qk_in_bfloat16():
  for attention in ('dot', 'shared_qk'):
    model.build_model(tiny(attention_impl='cudnn', dtype='bfloat16', attention=attention))


@pytest.mark.skipif(not ON_GPU, reason='cuDNN fused attention needs an NVIDIA GPU')
@pytest.mark.parametrize('position', ['sinusoidal', 'rotary', 't5'])
def test_cudnn_matches_xla_forward_grad_and_decode_on_gpu(position):
  cfg = tiny(dtype='bfloat16', position=position, d_model=128, num_heads=2)  # head dim 64
  want, params = logits_of({**cfg, 'attention_impl': 'xla'})
  got, _ = logits_of({**cfg, 'attention_impl': 'cudnn'}, params)
  mask = batch()['targets_segment'] > 0
  np.testing.assert_allclose(got[mask], want[mask], atol=0.05 * np.abs(want[mask]).max() + 0.05)
  b = {k: jnp.asarray(v) for k, v in batch().items()}
  module = model.build_model({**cfg, 'attention_impl': 'cudnn'})
  grads = jax.jit(jax.grad(lambda p: module.apply({'params': p}, b).astype(jnp.float32).mean()))(
    params
  )
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
  src = {'inputs': batch()['inputs']}
  outs = [
    decoding.generate(
      model.build_model({**cfg, 'attention_impl': impl}), params, src, method='greedy', max_len=6
    )
    for impl in ('xla', 'cudnn')
  ]
  assert outs[0].shape == outs[1].shape == (2, 6)

"""train/loss.py: the fused, chunked output projection + loss equals the materialised one (value
and gradient, against NumPy), and the trainer's fused path equals its unfused path on real
models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
import model
from tests.train import toy
from train import loss as loss_lib
from train import trainer
from tests.train.test_trainer import np_smoothed_ce


@pytest.mark.parametrize(
  'b,t,d,v,chunk,eps',
  [
    (3, 5, 8, 11, 1, 0.1),  # one position per chunk
    (4, 6, 8, 13, 8, 0.1),  # c = 2: several chunks
    (2, 7, 4, 9, 1000, 0.0),  # one chunk, no smoothing
    (2, 8, 6, 17, 4, 0.3),
  ],
)
def test_fused_matches_numpy(b, t, d, v, chunk, eps):
  rng = np.random.default_rng(b * 100 + t)
  h = rng.normal(size=(b, t, d)).astype(np.float32)
  table = rng.normal(size=(v, d)).astype(np.float32)
  targets = rng.integers(0, v, (b, t))
  weights = (rng.random((b, t)) > 0.3).astype(np.float32)
  fn = lambda h, tab: loss_lib.fused_cross_entropy_sums(
    h, tab, jnp.asarray(targets), jnp.asarray(weights), eps, chunk
  )
  got = jax.jit(fn)(jnp.asarray(h), jnp.asarray(table))
  logits = h.astype(np.float64) @ table.astype(np.float64).T
  want_loss, want_nll = np_smoothed_ce(logits, targets, weights, eps)
  np.testing.assert_allclose(got['loss'], want_loss, rtol=1e-5)
  np.testing.assert_allclose(got['nll'], want_nll, rtol=1e-5)
  assert got['tokens'] == weights.sum()
  assert got['correct'] == (weights * (logits.argmax(-1) == targets)).sum()
  # Gradient: dlogits = w (softmax - q); dh = dlogits . table, dtable = dlogits^T . h.
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = np.full(logits.shape, eps / (v - 1))
  np.put_along_axis(q, targets[..., None], 1 - eps, -1)
  g = weights[..., None] * (p - q)
  dh, dtab = jax.jit(jax.grad(lambda h, tab: 3.0 * fn(h, tab)['loss'], (0, 1)))(
    jnp.asarray(h), jnp.asarray(table)
  )
  np.testing.assert_allclose(dh, 3.0 * g @ table, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dtab, 3.0 * np.einsum('btv,btd->vd', g, h), rtol=1e-4, atol=1e-5)


def test_chunk_length_is_the_largest_divisor_that_fits():
  assert loss_lib.chunk_length(128, 64, 2048) == 16
  assert loss_lib.chunk_length(128, 64, 100) == 1  # never below one position
  assert loss_lib.chunk_length(3, 10, 16) == 5
  assert loss_lib.chunk_length(1, 7, 4096) == 7


def _grads(module, params, batch, chunk, accum=1):
  f = functools.partial(
    trainer.loss_and_grads,
    module=module,
    label_smoothing=0.1,
    accum_steps=accum,
    chunk_tokens=chunk,
  )
  return jax.jit(f)(params, batch, jax.random.PRNGKey(3))


def _assert_same(a, b):
  (ma, ga), (mb, gb) = a, b
  for k in ('loss', 'nll', 'accuracy', 'tokens'):
    np.testing.assert_allclose(ma[k], mb[k], rtol=1e-5, err_msg=k)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6), ga, gb)


def test_trainer_fused_equals_unfused_on_the_toy_model():
  module = toy.ToySeq2Seq()
  batch = {k: jnp.asarray(v) for k, v in toy.make_batch().items()}
  params = jax.tree.map(
    lambda x: x.value if hasattr(x, 'value') else x,
    module.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, batch)[
      'params'
    ],
    is_leaf=lambda x: hasattr(x, 'value'),
  )
  _assert_same(_grads(module, params, batch, 0), _grads(module, params, batch, 8))
  _assert_same(_grads(module, params, batch, 0, accum=2), _grads(module, params, batch, 8, accum=2))


def test_trainer_fused_equals_unfused_on_the_transformer():
  c = common.base_config().model  # encoder-decoder; decoder-only shares the Decoder code path
  c.vocab_size, c.d_model, c.num_heads, c.num_layers, c.d_ff = 37, 16, 2, 1, 32
  module = model.build_model(c)
  batch = {
    k: jnp.asarray(v % 37) if v.dtype != np.float32 else jnp.asarray(v)
    for k, v in toy.make_batch().items()
  }
  boxed = module.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, batch)[
    'params'
  ]
  from flax import linen as nn  # pylint: disable=import-outside-toplevel

  params = nn.unbox(boxed)
  _assert_same(_grads(module, params, batch, 0), _grads(module, params, batch, 16))


def test_fused_is_off_where_the_model_cannot_use_it():
  c = common.base_config()
  assert trainer.fused_loss_chunk(c) == 0  # off by default
  c.loss_chunk_tokens = 2048
  assert trainer.fused_loss_chunk(c) == 2048
  c.model.tie_output = False
  assert trainer.fused_loss_chunk(c) == 0
  c.model.tie_output, c.model.arch = True, 'rnn'
  assert trainer.fused_loss_chunk(c) == 0


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_logged_kl_is_the_divergence_to_the_smoothed_labels(eps):
  """`loss` is fairseq's label-smoothed cross-entropy; `loss_kl` = loss - H(q) is KL(q || p),
  computed here from the two distributions in NumPy."""
  rng = np.random.default_rng(0)
  v = 7
  logits = rng.normal(size=(3, 4, v))
  targets = rng.integers(0, v, size=(3, 4))
  weights = np.ones((3, 4))
  sums = loss_lib.cross_entropy_sums(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), eps
  )
  q = np.full((3, 4, v), eps / (v - 1))
  np.put_along_axis(q, targets[..., None], 1 - eps, axis=-1)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  kl = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - logp), 0).sum(-1).mean()
  got = float(sums['loss']) / 12 - loss_lib.smoothing_entropy(eps, v)
  assert got == pytest.approx(kl, rel=1e-5, abs=1e-6)

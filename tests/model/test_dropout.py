"""model/dropout.py: the hash mask is inverted dropout at the configured rate, with keep bits
independent across elements and calls, the same under any sharding, and selected by config."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import model
from model import config as model_config
from model import dropout as dropout_lib


def _apply(rate, x, seed=0, mask='hash'):
  layer = dropout_lib.Dropout(rate, mask)
  return layer.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(seed)})


@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5])
def test_keep_rate_and_scale(rate):
  x = jnp.ones((64, 64, 128))
  y = np.asarray(_apply(rate, x))
  kept = y != 0
  n = kept.size
  # Binomial(n, 1 - rate): 5 standard deviations.
  assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)  # inverted dropout
  assert abs(y.mean() - 1.0) < 0.01  # expectation preserved


def test_bits_are_uncorrelated_across_neighbours_and_seeds():
  x = jnp.ones((256, 1024))
  a = (np.asarray(_apply(0.5, x, seed=0)) != 0).astype(np.float64)
  b = (np.asarray(_apply(0.5, x, seed=1)) != 0).astype(np.float64)
  flat = a.ravel()
  tol = 5 / np.sqrt(flat.size)  # correlation of independent bits: ~N(0, 1/n)
  for lag in (1, 2, 128, 1024):  # next element, next rows of typical widths
    assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < tol, lag
  assert abs(np.corrcoef(flat, b.ravel())[0, 1]) < tol  # another call's mask is independent
  # Each of the 32 bits is balanced (the threshold compares all of them).
  bits = np.asarray(dropout_lib.hash_bits(jnp.array([3, 7], jnp.uint32), (1 << 16,)))
  shares = [((bits >> k) & 1).mean() for k in range(32)]
  assert max(abs(s - 0.5) for s in shares) < 5 * 0.5 / np.sqrt(bits.size)


def test_deterministic_and_rate_zero_are_identity_and_seed_replays():
  x = jax.random.normal(jax.random.key(0), (4, 8, 16))
  layer = dropout_lib.Dropout(0.3, 'hash')
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
  np.testing.assert_array_equal(_apply(0.0, x), x)
  np.testing.assert_array_equal(_apply(0.3, x, seed=5), _apply(0.3, x, seed=5))
  assert not np.array_equal(_apply(0.3, x, seed=5), _apply(0.3, x, seed=6))


def test_mask_does_not_depend_on_the_sharding():
  devices = jax.devices()
  if len(devices) < 4:
    pytest.skip('needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)')
  mesh = jax.sharding.Mesh(np.array(devices[:4]).reshape(2, 2), ('data', 'model'))
  x = jax.random.normal(jax.random.key(1), (8, 16, 32))
  fn = jax.jit(lambda x: _apply(0.3, x, seed=2))
  ref = fn(x)
  for spec in (P('data'), P('data', None, 'model'), P(None, 'model')):
    sharded = jax.device_put(x, NamedSharding(mesh, spec))
    np.testing.assert_array_equal(fn(sharded), ref)


def test_config_selects_the_mask_and_refuses_unknown_names():
  cfg = model.ModelConfig(vocab_size=16, dropout_mask='hash')
  model_config.validate(cfg)
  with pytest.raises(ValueError, match=r"dropout_mask='philox'.*\['bernoulli', 'hash'\]"):
    model_config.validate(model.ModelConfig(vocab_size=16, dropout_mask='philox'))
  with pytest.raises(ValueError, match='bernoulli, hash'):
    dropout_lib.Dropout(0.1, 'philox')
  # bernoulli is flax's own module: the masks of runs written before the option existed.
  x = jnp.ones((4, 32))
  ref = nn.Dropout(0.5).apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)})
  np.testing.assert_array_equal(_apply(0.5, x, mask='bernoulli'), ref)

"""Dropout with a choice of mask generator: `model.dropout_mask` = bernoulli | hash.

- `bernoulli`: flax `nn.Dropout`, whose mask is `jax.random.bernoulli` over the whole tensor
  (threefry bits, 32 per element).
- `hash`: the same inverted dropout, with each element's keep bit taken from a counter-based
  hash: two rounds of MurmurHash3's 32-bit finaliser over (element index, a 64-bit seed drawn
  once per call from the same `dropout` rng stream). The seed is a pure function of the step's
  key and the module path, as with bernoulli, so resumes replay exactly; the index is the
  element's position in the global array, so the mask does not depend on the sharding.

Why: on XLA:CPU, threefry bits cost ~28 ms per million elements on one core; the hash costs ~2 ms
(`python -m launch.benchmark ... --sweep='model.dropout_mask=bernoulli;model.dropout_mask=hash'`
measures it inside a train step). The hash is not a cryptographic generator; dropout needs
keep bits that are independent across elements and calls at the right rate, and the tests
check exactly that (rate, neighbour correlation, independence across seeds).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MASKS = ('bernoulli', 'hash')
_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive indices before the first mix


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: a bijection with full avalanche."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def hash_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 bits for every element of `shape`, from a [2] uint32 seed."""
  size = 1
  for n in shape:
    size *= n
  if size >= 2**32:
    raise ValueError(f'hash dropout indexes elements with uint32; {shape} has {size} elements')
  idx = jax.lax.iota(jnp.uint32, size).reshape(shape)
  return _fmix32(_fmix32(idx * jnp.uint32(_GOLDEN) + seed[0]) ^ seed[1])


def keep_threshold(rate: float) -> int:
  """Elements whose bits are >= this are kept: P(drop) = threshold / 2^32 (within 2^-32 of rate)."""
  return min(int(round(rate * 2**32)), 2**32 - 1)


class HashDropout(nn.Module):
  """Inverted dropout (kept elements scaled by 1 / (1 - rate)) with hash keep bits."""

  rate: float
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    seed = jax.random.bits(self.make_rng(self.rng_collection), (2,), jnp.uint32)
    keep = hash_bits(seed, x.shape) >= jnp.uint32(keep_threshold(self.rate))
    return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))


def Dropout(rate: float, mask: str = 'bernoulli', name: str | None = None) -> nn.Module:  # noqa: N802
  """The dropout module for `model.dropout_mask` (same name and rng stream for both kinds)."""
  if mask == 'bernoulli':
    return nn.Dropout(rate, name=name)
  if mask == 'hash':
    return HashDropout(rate, name=name)
  raise ValueError(f'model.dropout_mask={mask!r}; valid: {", ".join(MASKS)}')

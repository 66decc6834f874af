"""Each position scheme against a NumPy reference of its paper's formula."""

import math
import types

import jax.numpy as jnp
import numpy as np
import pytest

from model import positions


def test_sinusoid_table_matches_paper_formula():
  d, pos = 16, np.array([[0, 3, 7, 100]])
  got = np.asarray(positions.sinusoid_table(jnp.asarray(pos), d))
  want = np.zeros(pos.shape + (d,))
  for j, p in enumerate(pos[0]):
    for i in range(d // 2):
      want[0, j, 2 * i] = math.sin(p / 10000 ** (2 * i / d))
      want[0, j, 2 * i + 1] = math.cos(p / 10000 ** (2 * i / d))
  np.testing.assert_allclose(got, want, atol=1e-4)


def _t5_bucket_reference(rel, bidirectional, num_buckets, max_distance):
  """Scalar transcription of the T5 bucketing rule (Raffel et al. 2020, relative_attention.py)."""
  n = num_buckets // 2 if bidirectional else num_buckets
  base = n if (bidirectional and rel > 0) else 0
  dist = abs(rel) if bidirectional else max(-rel, 0)
  exact = n // 2
  if dist < exact:
    return base + dist
  large = exact + int(math.log(dist / exact) / math.log(max_distance / exact) * (n - exact))
  return base + min(large, n - 1)


@pytest.mark.parametrize('bidirectional', [True, False])
def test_t5_buckets_match_reference(bidirectional):
  rel = np.arange(-300, 301)
  got = np.asarray(positions.t5_bucket(jnp.asarray(rel), bidirectional, 32, 128))
  want = [_t5_bucket_reference(int(r), bidirectional, 32, 128) for r in rel]
  np.testing.assert_array_equal(got, want)
  assert got.max() == (31 if bidirectional else 31) and got.min() == 0
  if not bidirectional:  # the future all falls in bucket 0 (masked anyway)
    assert np.all(got[rel > 0] == 0)


@pytest.mark.parametrize(
  'heads,want',
  [
    (8, [2.0 ** -(i + 1) for i in range(8)]),
    # 12 = 8 + 4: the 8-head slopes, then slopes 1, 3, 5, 7 (1-based, odd) of the 16-head series.
    (12, [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 * k) for k in (1, 3, 5, 7)]),
  ],
)
def test_alibi_slopes_match_paper(heads, want):
  np.testing.assert_allclose(positions.alibi_slopes(heads), want, rtol=1e-12)


def test_alibi_bias_is_minus_slope_times_distance():
  cfg = types.SimpleNamespace(num_heads=4)
  q, k = np.array([[5, 6]]), np.array([[0, 3, 5, 6]])
  got = np.asarray(positions.alibi_bias(None, jnp.asarray(q), jnp.asarray(k), cfg, False))
  slopes = np.array([2.0 ** -(2 * (h + 1)) for h in range(4)])
  want = -slopes[None, :, None, None] * np.abs(k[:, None, None, :] - q[:, None, :, None])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_shaw_logits_and_values_with_clipping():
  rng = np.random.default_rng(0)
  b, t, s, h, d, kmax = 2, 5, 7, 3, 4, 2
  q = rng.normal(size=(b, t, h, d)).astype(np.float32)
  tk, tv = (rng.normal(size=(2 * kmax + 1, d)).astype(np.float32) for _ in range(2))
  q_pos = rng.integers(0, 10, (b, t))
  k_pos = rng.integers(0, 10, (b, s))
  w = rng.random((b, h, t, s)).astype(np.float32)
  idx = positions.shaw_index(jnp.asarray(q_pos), jnp.asarray(k_pos), kmax)
  logits = np.asarray(positions.shaw_logits(jnp.asarray(q), jnp.asarray(tk), idx))
  values = np.asarray(positions.shaw_values(jnp.asarray(w), jnp.asarray(tv), idx))
  want_l, want_v = np.zeros((b, h, t, s)), np.zeros((b, t, h, d))
  for bi in range(b):
    for i in range(t):
      for j in range(s):
        r = min(max(k_pos[bi, j] - q_pos[bi, i], -kmax), kmax) + kmax
        for hh in range(h):
          want_l[bi, hh, i, j] = q[bi, i, hh] @ tk[r]
          want_v[bi, i, hh] += w[bi, hh, i, j] * tv[r]
  np.testing.assert_allclose(logits, want_l, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(values, want_v, rtol=1e-5, atol=1e-5)


def test_rotary_matches_pairwise_rotation():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 3, 2, 6)).astype(np.float32)
  pos = np.array([[0, 4, 9]])
  got = np.asarray(positions.apply_rotary(jnp.asarray(x), jnp.asarray(pos)))
  want = np.empty_like(x)
  for t in range(3):
    for i in range(3):
      a = pos[0, t] * 10000.0 ** (-2 * i / 6)
      rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
      want[0, t, :, 2 * i : 2 * i + 2] = x[0, t, :, 2 * i : 2 * i + 2] @ rot.T
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_rotary_dot_product_depends_only_on_offset():
  rng = np.random.default_rng(2)
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 8)).astype(np.float32)) for _ in range(2))

  def score(m, n):
    rq = positions.apply_rotary(q, jnp.array([[m]]))
    rk = positions.apply_rotary(k, jnp.array([[n]]))
    return float(jnp.sum(rq * rk))

  for m, n in [(0, 3), (5, 2), (7, 7)]:
    for shift in (1, 11, 40):
      assert abs(score(m, n) - score(m + shift, n + shift)) < 1e-4
  assert abs(score(0, 3) - score(0, 4)) > 1e-3  # it does depend on the offset


def test_alibi_encoder_is_mirror_equivariant():
  """The symmetric -m|j - i| bias of a bidirectional encoder (the ALiBi author's encoder form,
  documented in model/positions.py): with no other position signal, reversing a sequence
  reverses its encoder states, so only asymmetric content tells a sentence from its reversal."""
  import jax

  import model

  cfg = dict(
    arch='encoder_decoder',
    vocab_size=16,
    d_model=16,
    num_heads=4,
    num_layers=2,
    d_ff=16,
    dropout=0.0,
    position='alibi',
  )
  m = model.build_model(cfg)
  ids = np.array([[5, 9, 3, 7, 11, 4]], np.int32)
  batch = lambda t: {'inputs': jnp.asarray(t), 'decoder_inputs': jnp.asarray(t)}
  params = m.init(jax.random.key(0), batch(ids))
  enc = lambda t: np.asarray(m.apply(params, batch(t), method='encode'))
  np.testing.assert_allclose(enc(ids[:, ::-1]), enc(ids)[:, ::-1], atol=1e-5)
  rotary = model.build_model({**cfg, 'position': 'rotary'})  # a directional scheme is not
  p2 = rotary.init(jax.random.key(0), batch(ids))
  e = lambda t: np.asarray(rotary.apply(p2, batch(t), method='encode'))
  assert np.abs(e(ids[:, ::-1]) - e(ids)[:, ::-1]).max() > 1e-3

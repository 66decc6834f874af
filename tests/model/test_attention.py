"""Attention variants against NumPy references and each other."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import attention as attn
from model.config import ModelConfig

B, T, D_MODEL, H, HD = 2, 5, 8, 4, 2


def _cfg(**kw):
  base = dict(vocab_size=8, d_model=D_MODEL, num_heads=H, head_dim=HD, dropout=0.0)
  base.update(kw)
  return ModelConfig(**base)


def _inputs(causal=True):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D_MODEL)), jnp.float32)
  seg = jnp.asarray([[1] * T, [1, 1, 1, 0, 0]], jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  return x, attn.make_mask(seg, seg, pos, pos, causal=causal), pos


@functools.lru_cache(maxsize=None)
def _run(cfg, params_from=None):
  module = attn.Attention(cfg)
  x, mask, pos = _inputs()
  params = module.init(jax.random.key(1), x, x, mask, None, pos, pos)['params']
  return module, params


def _apply(cfg, params):
  x, mask, pos = _inputs()
  return np.asarray(
    jax.jit(lambda p: attn.Attention(cfg).apply({'params': p}, x, x, mask, None, pos, pos))(params)
  )


def _np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _weights(params):
  unbox = lambda t: np.asarray(t.unbox() if hasattr(t, 'unbox') else t)
  return {k: unbox(v['kernel']) if isinstance(v, dict) else unbox(v) for k, v in params.items()}


@pytest.mark.parametrize('kind', ['dot', 'additive', 'linear'])
def test_matches_numpy_reference(kind):
  cfg = _cfg(attention=kind)
  _, params = _run(cfg)
  got = _apply(cfg, params)
  w = _weights(params)
  x, mask, _ = (np.asarray(a) for a in _inputs())
  q = np.einsum('btd,dhk->bthk', x, w['query'])
  k = np.einsum('btd,dhk->bthk', x, w['key'])
  v = np.einsum('btd,dhk->bthk', x, w['value'])
  if kind == 'dot':
    s = np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(HD)
    a = _np_softmax(np.where(mask, s, -1e9))
  elif kind == 'additive':
    e = np.tanh(q[:, :, None] + k[:, None])  # [B,T,S,H,K]
    s = np.einsum('btshk,hk->bhts', e, w['score_v'])
    a = _np_softmax(np.where(mask, s, -1e9))
  else:
    phi = lambda z: np.where(z > 0, z + 1, np.exp(z))
    s = np.einsum('bthk,bshk->bhts', phi(q), phi(k)) * mask
    a = s / np.where(s.sum(-1, keepdims=True) > 0, s.sum(-1, keepdims=True), 1)
  out = np.einsum('bhts,bshk->bthk', a, v)
  want = np.einsum('bthk,hkd->btd', out, w['out'])
  np.testing.assert_allclose(got[0], want[0], atol=1e-5)
  np.testing.assert_allclose(got[1, :3], want[1, :3], atol=1e-5)


@pytest.mark.parametrize('kind', ['dot', 'additive', 'linear'])
@pytest.mark.parametrize('kv_heads', [1, 2])
def test_grouped_query_equals_mha_with_repeated_kv(kind, kv_heads):
  gqa = _cfg(attention=kind, num_kv_heads=kv_heads)
  mha = _cfg(attention=kind)
  _, p = _run(gqa)
  # MHA whose head h uses kv head h // (H / kv_heads): repeat the K/V kernels along heads.
  rep = lambda t: t.replace_boxed(jnp.repeat(t.unbox(), H // kv_heads, axis=1))
  p_mha = dict(p)
  p_mha['key'] = {'kernel': rep(p['key']['kernel'])}
  p_mha['value'] = {'kernel': rep(p['value']['kernel'])}
  np.testing.assert_allclose(_apply(gqa, p), _apply(mha, p_mha), atol=1e-6)
  if kv_heads == 1:  # and it is not trivially so: a different K/V per head changes the output
    p_mha['key'] = {
      'kernel': p_mha['key']['kernel'].replace_boxed(
        p_mha['key']['kernel'].unbox() * jnp.arange(1, H + 1)[None, :, None]
      )
    }
    assert np.abs(_apply(mha, p_mha) - _apply(gqa, p)).max() > 1e-4


def test_kv_heads_equal_heads_is_mha():
  a, b = _cfg(num_kv_heads=H), _cfg()
  _, p = _run(a)
  np.testing.assert_array_equal(_apply(a, p), _apply(b, p))
  assert p['key']['kernel'].unbox().shape == (D_MODEL, H, HD)


def test_shared_qk_follows_reformer():
  """Kitaev et al. 2020 sec. 2: no attention to one's own key unless it is the only one visible,
  unit-length keys, and QK sharing in self-attention only."""
  cfg = _cfg(attention='shared_qk')
  module, params = _run(cfg)
  x, causal, pos = _inputs(causal=True)
  for is_causal, mask in ((True, causal), (False, _inputs(causal=False)[1])):
    mask = attn.exclude_self(mask, pos, pos)
    _, state = module.apply(
      {'params': params}, x, x, mask, None, pos, pos, mutable=['intermediates']
    )
    w = np.asarray(state['intermediates']['attention_weights'][0])  # [B, H, T, S]
    own = np.diagonal(w, axis1=-2, axis2=-1)  # [B, H, T]
    valid = [(0, t) for t in range(T)] + [(1, t) for t in range(3)]
    m = np.asarray(mask)[:, 0]
    alone = np.diagonal(m, axis1=-2, axis2=-1) & (m.sum(-1) == 1)  # own key the only one left
    for b, t in valid:
      np.testing.assert_allclose(own[b, :, t], 1.0 if alone[b, t] else 0.0, atol=1e-6)
    # causal: only the first token is alone; bidirectional: none is
    assert list(alone[0]) == [is_causal] + [False] * (T - 1)

  # Keys are unit length: scaling the input by 3 scales queries by 3 and leaves keys alone, so
  # log-weight differences (= logit differences) triple; unnormalised shared q = k would give 9x.
  full = attn.exclude_self(_inputs(causal=False)[1], pos, pos)

  def log_weights(scale):
    _, st = module.apply(
      {'params': params}, x * scale, x * scale, full, None, pos, pos, mutable=['intermediates']
    )
    return np.log(np.asarray(st['intermediates']['attention_weights'][0])[0, :, 2, [0, 1, 3, 4]])

  d1, d3 = (np.diff(log_weights(s), axis=0) for s in (1.0, 3.0))
  np.testing.assert_allclose(d3, 3.0 * d1, rtol=1e-3, atol=1e-4)
  # Cross-attention: decoder queries and encoder keys get their own matrices.
  cross = attn.Attention(cfg, is_self=False)
  mem = jnp.asarray(np.random.default_rng(5).normal(size=(B, T + 2, D_MODEL)), jnp.float32)
  cmask = attn.make_mask(jnp.ones((B, T), jnp.int32), jnp.ones((B, T + 2), jnp.int32))
  cparams = cross.init(jax.random.key(1), x, mem, cmask, None, pos, None)['params']
  assert 'key' in cparams and 'query' in cparams


def test_shared_qk_has_one_matrix_and_symmetric_scores():
  cfg = _cfg(attention='shared_qk')
  module, params = _run(cfg)
  assert 'key' not in params and 'query' in params
  x, mask, pos = _inputs(causal=False)
  _, state = module.apply(
    {'params': params},
    x,
    x,
    mask,
    None,
    pos,
    pos,
    capture_intermediates=lambda m, name: m.name == 'query',
    mutable=['intermediates'],
  )
  q, k = state['intermediates']['query']['__call__']  # called for queries, then for keys
  scores = np.asarray(attn.dot_scores(q, k))
  np.testing.assert_allclose(scores, np.swapaxes(scores, -1, -2), atol=1e-6)
  # two independent matrices (plain dot) are not symmetric
  dot_cfg = _cfg()
  _, p2 = _run(dot_cfg)
  w = _weights(p2)
  qd, kd = np.einsum('btd,dhk->bthk', x, w['query']), np.einsum('btd,dhk->bthk', x, w['key'])
  s2 = np.einsum('bthk,bshk->bhts', qd, kd)
  assert np.abs(s2 - np.swapaxes(s2, -1, -2)).max() > 1e-3


def test_mask_combines_padding_causal_and_segments():
  seg = jnp.asarray([[1, 1, 2, 2, 0]])
  pos = jnp.asarray([[0, 1, 0, 1, 0]])
  m = np.asarray(attn.make_mask(seg, seg, pos, pos, causal=True))[0, 0]
  want = np.array(
    [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]], bool
  )
  np.testing.assert_array_equal(m, want)


def test_cross_attention_projects_the_other_sequence():
  """Cross-attention (queries from x, keys and values from kv_input) against NumPy."""
  cfg = _cfg()
  x, _, pos = _inputs()
  mem = jnp.asarray(np.random.default_rng(5).normal(size=(B, T + 2, D_MODEL)), jnp.float32)
  mask = attn.make_mask(jnp.ones((B, T), jnp.int32), jnp.ones((B, T + 2), jnp.int32))
  module = attn.Attention(cfg, is_self=False)
  params = module.init(jax.random.key(2), x, mem, mask)['params']
  got = np.asarray(module.apply({'params': params}, x, mem, mask))
  w = _weights(params)
  x, mem = np.asarray(x), np.asarray(mem)
  q = np.einsum('btd,dhk->bthk', x, w['query'])
  k = np.einsum('btd,dhk->bthk', mem, w['key'])
  v = np.einsum('btd,dhk->bthk', mem, w['value'])
  a = _np_softmax(np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(HD))
  want = np.einsum('bthk,hkd->btd', np.einsum('bhts,bshk->bthk', a, v), w['out'])
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize('impl', ['xla', 'einsum'])
def test_t5_unscaled_adds_the_bias_to_raw_logits_with_the_scale_in_the_query_init(impl):
  """T5 (Raffel et al. 2020): softmax(q.k + bias), no 1/sqrt(D); the query projection starts
  with std (d_model * D)^-1/2 instead (Mesh TF's init), so logits at init match `t5`'s."""
  cfg = _cfg(attention='dot', position='t5_unscaled', attention_impl=impl)
  module = attn.Attention(cfg, 't5_unscaled')
  x, mask, pos = _inputs()
  bias = jnp.asarray(np.random.default_rng(2).normal(size=(B, H, T, T)), jnp.float32)
  params = module.init(jax.random.key(1), x, x, mask, bias, pos, pos)['params']
  got, inter = module.apply(
    {'params': params}, x, x, mask, bias, pos, pos, mutable=['intermediates']
  )
  w = _weights(params)
  xn = np.asarray(x)
  q = np.einsum('btd,dhk->bthk', xn, w['query'])
  k = np.einsum('btd,dhk->bthk', xn, w['key'])
  v = np.einsum('btd,dhk->bthk', xn, w['value'])
  a = _np_softmax(np.where(mask, np.einsum('bthk,bshk->bhts', q, k) + np.asarray(bias), -1e9))
  want = np.einsum(
    'bhtk,hkd->btd', np.einsum('bhts,bshk->bthk', a, v).transpose(0, 2, 1, 3), w['out']
  )
  np.testing.assert_allclose(np.asarray(got)[0], want[0], atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(inter['intermediates']['attention_weights'][0])[0], a[0], atol=1e-6
  )
  # init: query std (d_model * D)^-1/2 (truncated normal: ~0.88 of it), keys the usual d^-1/2
  ratio = w['query'].std() / w['key'].std()
  assert ratio == pytest.approx(HD**-0.5, rel=0.35)
  scaled = attn.Attention(_cfg(attention='dot', position='t5'), 't5')
  p2 = scaled.init(jax.random.key(1), x, x, mask, bias, pos, pos)['params']
  np.testing.assert_allclose(_weights(p2)['query'] * HD**-0.5, w['query'], rtol=1e-5)


@pytest.mark.parametrize('num_kv', [1, 2, 4])
def test_cross_attention_from_head_major_cache_equals_numpy(num_kv):
  """K cached [B,K,S,D] and V [B,K,D,S] give softmax(q.k * scale + mask) v per head, with head
  h reading K/V head h // (H / K), against a NumPy reference."""
  rng = np.random.default_rng(num_kv)
  b, t, s, h, d = 3, 5, 7, 4, 8
  q = rng.normal(size=(b, t, h, d)).astype(np.float32)
  k = rng.normal(size=(b, s, num_kv, d)).astype(np.float32)
  v = rng.normal(size=(b, s, num_kv, d)).astype(np.float32)
  keep = rng.random((b, 1, t, s)) < 0.7
  keep[..., 0] = True
  out, w = attn.cross_attention_from_cache(
    jnp.asarray(q),
    jnp.asarray(k.transpose(0, 2, 1, 3)),
    jnp.asarray(v.transpose(0, 2, 3, 1)),
    jnp.asarray(keep),
    0.3,
  )
  kv_of = np.arange(h) // (h // num_kv)
  logits = np.einsum('bthd,bshd->bhts', q, k[:, :, kv_of]) * 0.3
  logits = np.where(keep, logits, -np.inf)
  want_w = np.exp(logits - logits.max(-1, keepdims=True))
  want_w /= want_w.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(w), want_w, rtol=1e-5, atol=1e-6)
  want = np.einsum('bhts,bshd->bthd', want_w, v[:, :, kv_of])
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)

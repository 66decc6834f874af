"""Multi-head attention with its variants as configuration.

Scoring (`model.attention`):
- `dot`: softmax(q.k / sqrt(D) + bias) v. Runs through `jax.nn.dot_product_attention` (fused cuDNN
  on GPU) unless Shaw terms or active attention dropout need the explicit einsum path.
- `shared_qk`: the same matrix projects queries and keys (W_q = W_k), so q_i.k_j is a symmetric
  bilinear form of the inputs: the "why two matrices?" ablation.
- `additive`: Bahdanau scoring v_h . tanh(q_i + k_j) per head (no 1/sqrt(D)).
- `linear`: Katharopoulos et al. 2020 with feature map elu+1:
  out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j). Full passes use this parallel form
  under the same mask as softmax attention (exact for padding, causal and packed rows; O(T^2) memory,
  fine for sentence lengths); decoding uses the recurrence, whose cache is the running state
  S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) instead of a K/V list.
`num_kv_heads` < `num_heads` gives grouped-query (1 = multi-query) attention for every scoring kind
except shared_qk; query head h reads kv head h // (num_heads / num_kv_heads).

Allowed (attention x position) pairs; build_model rejects the rest with a ValueError:

| attention  | none | sinusoidal | learned | rotary | shaw | t5 | alibi |
|------------|------|------------|---------|--------|------|----|-------|
| dot        |  y   |     y      |    y    |   y    |  y   | y  |   y   |
| shared_qk  |  y   |     y      |    y    |   y    |  y   | y  |   y   |
| additive   |  y   |     y      |    y    |   -    |  -   | y  |   y   |
| linear     |  y   |     y      |    y    |   y    |  -   | -  |   -   |

additive: rotary and Shaw's key term are defined through a dot product q.k. linear: there is no
score matrix in the recurrence to add a bias or relative term to; rotary follows RoFormer sec. 3.3
(rotate phi(q), phi(k) in the numerator only). Cross-attention always uses position `none`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import positions as pos_lib
from model.layers import DenseGeneral, constrain

NEG_INF = -1e9  # finite, so fully masked rows (padding queries) stay NaN-free


def make_mask(q_seg, k_seg, q_pos=None, k_pos=None, causal: bool = False) -> jax.Array:
  """Boolean [B,1,Tq,Tk]: same packed segment, key not padding, and (causal) key not after query.

  Causality compares explicit positions, so it also holds for cached keys and packed rows.
  """
  m = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] > 0)
  if causal:
    m &= k_pos[:, None, :] <= q_pos[:, :, None]
  return m[:, None]


def _group(q: jax.Array, num_kv: int) -> jax.Array:
  """[B,T,H,D] -> [B,T,K,G,D] with head h = k * G + g (jax.nn.dot_product_attention's layout)."""
  b, t, h, d = q.shape
  return q.reshape(b, t, num_kv, h // num_kv, d)


def dot_scores(q: jax.Array, k: jax.Array) -> jax.Array:
  """q.k for every head: q [B,T,H,D], k [B,S,K,D] -> [B,H,T,S] (unscaled)."""
  s = jnp.einsum('btkgd,bskd->bkgts', _group(q, k.shape[2]), k)
  return s.reshape(s.shape[0], -1, *s.shape[3:])


def additive_scores(q: jax.Array, k: jax.Array, v_vec: jax.Array) -> jax.Array:
  """Bahdanau: v_h . tanh(q_i + k_j). v_vec [H,D] -> [B,H,T,S]."""
  nk = k.shape[2]
  e = jnp.tanh(_group(q, nk)[:, :, None] + k[:, None, :, :, None, :])  # [B,T,S,K,G,D]
  s = jnp.einsum('btskgd,kgd->bkgts', e, v_vec.reshape(nk, -1, v_vec.shape[-1]))
  return s.reshape(s.shape[0], -1, *s.shape[3:])


def combine(weights: jax.Array, v: jax.Array) -> jax.Array:
  """sum_j w_ij v_j: weights [B,H,T,S], v [B,S,K,D] -> [B,T,H,D]."""
  b, h, t, s = weights.shape
  nk = v.shape[2]
  out = jnp.einsum('bkgts,bskd->btkgd', weights.reshape(b, nk, h // nk, t, s), v)
  return out.reshape(b, t, h, v.shape[-1])


def elu_feature(x: jax.Array) -> jax.Array:
  return jax.nn.elu(x) + 1.0


def linear_attention(fq, fk, v, mask, state=None, rq=None, rk=None):
  """Linear attention of new queries over (running state + new keys), one formula for both modes.

  fq [B,T,H,D], fk/v [B,S,K,D] feature-mapped; rq/rk their rotated versions (numerator only;
  default: unrotated); mask [B,1,T,S] over the new keys; state (S [B,K,D,D], z [B,K,D]) summarises
  earlier keys. Returns out [B,T,H,D].
  """
  rq = fq if rq is None else rq
  b, t, h, d = fq.shape
  if fk is None:  # state only (cross-attention while decoding)
    nk = state[1].shape[1]
    num, den = jnp.zeros((b, t, h, state[0].shape[-1]), fq.dtype), jnp.zeros((b, t, h), fq.dtype)
  else:
    rk = fk if rk is None else rk
    nk = fk.shape[2]
    m = mask[:, 0].astype(fq.dtype)  # [B,T,S]
    num = combine(dot_scores(rq, rk) * m[:, None], v)
    den = (dot_scores(fq, fk) * m[:, None]).sum(-1).transpose(0, 2, 1)  # [B,T,H]
  if state is not None:
    s, z = state
    num = num + jnp.einsum('btkgd,bkde->btkge', _group(rq, nk), s).reshape(b, t, h, -1)
    den = den + jnp.einsum('btkgd,bkd->btkg', _group(fq, nk), z).reshape(b, t, h)
  return num / jnp.where(den > 0, den, 1.0)[..., None]


class Attention(nn.Module):
  """Self- or cross-attention. Masks and position biases are built once per stack and passed in.

  decode=True: self-attention appends the new tokens' K/V (or, linear, folds them into the running
  state) into the 'cache' collection at `cache_index`; cross-attention projects the encoder output
  once, when the cache is created, and reuses it on every later step.
  """
  cfg: object
  position: str = 'none'
  is_self: bool = True
  decode: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, kv_input, mask, bias=None, q_pos=None, k_pos=None, cache_index=None):
    cfg, dt = self.cfg, self.cfg.jdtype
    nh, nk, d = cfg.num_heads, cfg.kv_heads, cfg.hd
    kind = pos_lib.kind(self.position)
    proj = lambda n, name: DenseGeneral((n, d), ('embed', 'heads', 'kv'), dtype=dt, name=name)
    q_proj = proj(nh, 'query')
    k_proj = q_proj if cfg.attention == 'shared_qk' else proj(nk, 'key')
    v_proj = proj(nk, 'value')
    q = constrain(q_proj(x), ('batch', 'length', 'heads', 'kv'))

    if self.is_self:
      k, v = k_proj(x), v_proj(x)
    elif self.decode:  # cross K/V: computed when the cache is created, reused afterwards
      k = self.variable('cache', 'cross_k', lambda: k_proj(kv_input)).value
      v = self.variable('cache', 'cross_v', lambda: v_proj(kv_input)).value
    else:
      k, v = k_proj(kv_input), v_proj(kv_input)

    if cfg.attention == 'linear':
      out = self._linear(q, k, v, mask, q_pos, cache_index, kind == 'rotary')
    else:
      if kind == 'rotary':  # rotate by each token's own position, before it enters the cache
        q, k = pos_lib.apply_rotary(q, q_pos), pos_lib.apply_rotary(k, q_pos)
      if self.is_self and self.decode:
        k, v = self._append(k, v, mask.shape[-1], cache_index)
      out = self._softmax(q, k, v, mask, bias, q_pos, k_pos, kind)
    out = constrain(out, ('batch', 'length', 'heads', 'kv'))
    return DenseGeneral((cfg.d_model,), ('heads', 'kv', 'embed'), in_dims=2, dtype=dt, name='out')(out)

  def _append(self, k, v, length, index):
    b, _, nk, d = k.shape
    ck = self.variable('cache', 'k', jnp.zeros, (b, length, nk, d), k.dtype)
    cv = self.variable('cache', 'v', jnp.zeros, (b, length, nk, d), v.dtype)
    ck.value = jax.lax.dynamic_update_slice(ck.value, k, (0, index, 0, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v, (0, index, 0, 0))
    return ck.value, cv.value

  def _softmax(self, q, k, v, mask, bias, q_pos, k_pos, kind):
    cfg = self.cfg
    dropout_on = not self.deterministic and cfg.attention_dropout > 0
    if cfg.attention != 'additive' and kind != 'relative' and not dropout_on:
      impl = 'xla' if cfg.attention_impl == 'auto' else cfg.attention_impl
      if impl != 'einsum':
        b = None if bias is None else bias.astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, bias=b, mask=mask, implementation=impl)
    if cfg.attention == 'additive':
      v_vec = self.param('score_v', nn.with_logical_partitioning(
          nn.initializers.normal(cfg.hd ** -0.5), ('heads', 'kv')), (cfg.num_heads, cfg.hd))
      logits = additive_scores(q, k, v_vec.astype(q.dtype))
    else:
      logits = dot_scores(q, k) * (cfg.hd ** -0.5)
    if kind == 'relative':
      table_k, table_v = pos_lib.shaw_tables(self, cfg)
      index = pos_lib.shaw_index(q_pos, k_pos, cfg.shaw_max_distance)
      logits = logits + pos_lib.shaw_logits(q, table_k, index) * (cfg.hd ** -0.5)
    if bias is not None:
      logits = logits + bias
    logits = jnp.where(mask, logits.astype(jnp.float32), NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    weights = nn.Dropout(cfg.attention_dropout)(weights, deterministic=self.deterministic)
    out = combine(weights, v)
    if kind == 'relative':
      out = out + pos_lib.shaw_values(weights, table_v, index)
    return out

  def _linear(self, q, k, v, mask, q_pos, index, rotary):
    fq, fk = elu_feature(q.astype(jnp.float32)), elu_feature(k.astype(jnp.float32))
    v = v.astype(jnp.float32)
    rq = rk = None
    if rotary:
      rq, rk = pos_lib.apply_rotary(fq, q_pos), pos_lib.apply_rotary(fk, q_pos)
    if not self.decode:
      return linear_attention(fq, fk, v, mask, rq=rq, rk=rk).astype(q.dtype)
    b, _, nk, d = fk.shape
    if not self.is_self:  # encoder side summarised once into the state; no new keys
      key_ok = mask.any(axis=2)[:, 0].astype(jnp.float32)[:, :, None, None]  # [B,S,1,1]
      s = self.variable('cache', 'cross_s', lambda: jnp.einsum('bskd,bske->bkde', fk * key_ok, v))
      z = self.variable('cache', 'cross_z', lambda: (fk * key_ok).sum(1))
      return linear_attention(fq, None, None, None, (s.value, z.value)).astype(q.dtype)
    s = self.variable('cache', 'lin_s', jnp.zeros, (b, nk, d, d), jnp.float32)
    z = self.variable('cache', 'lin_z', jnp.zeros, (b, nk, d), jnp.float32)
    t = q.shape[1]
    chunk = jax.lax.dynamic_slice(mask, (0, 0, 0, index), (b, 1, t, t))  # new keys vs new queries
    new_ok = jnp.diagonal(chunk[:, 0], axis1=1, axis2=2).astype(jnp.float32)[:, :, None, None]
    rk_ = fk if rk is None else rk
    out = linear_attention(fq, fk, v, chunk, (s.value, z.value), rq, rk)
    s.value = s.value + jnp.einsum('bskd,bske->bkde', rk_ * new_ok, v)
    z.value = z.value + (fk * new_ok).sum(1)
    return out.astype(q.dtype)

"""Multi-head attention with its variants as configuration.

Scoring (`model.attention`):
- `dot`: softmax(q.k / sqrt(D) + bias) v. Runs through `jax.nn.dot_product_attention` (fused cuDNN
  on GPU) unless Shaw terms or active attention dropout need the explicit einsum path.
- `shared_qk`: Reformer's shared-QK attention (Kitaev et al. 2020, sec. 2): in self-attention the
  same matrix projects queries and keys (W_q = W_k), keys are unit-normalised (k_j = q_j / |q_j|),
  and a token does not attend to itself unless no other key is visible (the first token of a
  causal row, a one-token segment): with shared QK a token's own key would otherwise score
  highest. Cross-attention keeps its own key projection (decoder queries and encoder keys are
  different things). The "why two matrices?" ablation.
- `additive`: Bahdanau scoring v_h . tanh(q_i + k_j) per head (no 1/sqrt(D)).
- `linear`: Katharopoulos et al. 2020 with feature map elu+1:
  out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j). Full passes use this parallel form
  under the same mask as softmax attention (exact for padding, causal and packed rows; O(T^2)
  memory, fine for sentence lengths); decoding uses the recurrence, whose cache is the running state
  S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) instead of a K/V list.
`num_kv_heads` < `num_heads` gives grouped-query (1 = multi-query) attention for every scoring kind
except shared_qk; query head h reads kv head h // (num_heads / num_kv_heads).

Every kind is one `KINDS` entry; `Kind.takes` records which position-scheme hooks it can take
(positions.py), and the (attention x position) refusal table of model/config.py derives from it:

| attention  | none | sinusoidal | learned | rotary | shaw | t5 | alibi |
|------------|------|------------|---------|--------|------|----|-------|
| dot        |  y   |     y      |    y    |   y    |  y   | y  |   y   |
| shared_qk  |  y   |     y      |    y    |   y    |  y   | y  |   y   |
| additive   |  y   |     y      |    y    |   -    |  -   | y  |   y   |
| linear     |  y   |     y      |    y    |   y    |  -   | -  |   -   |
| lightconv  |  y   |     y      |    y    |   -    |  -   | -  |   -   |
| dynamicconv|  y   |     y      |    y    |   -    |  -   | -  |   -   |

`t5_unscaled` (T5's own unscaled logits, positions.py) is accepted wherever `t5` is.
additive: rotary and Shaw's key term are defined through a dot product q.k. linear: there is no
score matrix in the recurrence to add a bias or relative term to; rotary follows RoFormer sec. 3.3
(rotate phi(q), phi(k) in the numerator only). lightconv / dynamicconv (model/convolution.py,
Wu et al. 2019) replace self-attention by a convolution, whose kernel already sees relative
offsets: they take the added position embeddings the paper uses, and there are no q.k logits for
rotary, Shaw or a bias to act on. Their cross-attention is `dot`. Cross-attention always uses
position `none`.

The layer reports its attention weights [B,H,Tq,Tk] as `('intermediates', 'attention_weights')`
when that collection is mutable (`module.apply(..., mutable=['intermediates'])`); on the fused
path they are computed beside the kernel for that purpose only, so training and decoding run the
same computation whether or not anyone asks.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import convolution as conv_lib
from model import positions as pos_lib
from model.dropout import Dropout
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


def fold_beams(x, rows: int):
  """[r*rows, T, ...] -> [rows, r*T, ...]: a sentence's r consecutive beam rows become one row of
  r*T queries, so cross-attention reads that sentence's encoder keys once for all its beams
  (`EncoderDecoder.beams_share_source`). The identity when r == 1."""
  r = x.shape[0] // rows
  return x if r == 1 else x.reshape(rows, r * x.shape[1], *x.shape[2:])


def exclude_self(mask: jax.Array, q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
  """Reformer's rule for shared QK: drop each query's own key (same segment and position) from
  `mask` [B,1,Tq,Tk], except in rows where it is the only visible key."""
  own = q_pos[:, None, :, None] == k_pos[:, None, None, :]
  others = mask & ~own
  return jnp.where(jnp.any(others, axis=-1, keepdims=True), others, mask)


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


def linear_weights(fq, fk, mask, rq=None, rk=None):
  """The weights linear attention applies to v in a full pass: [B,H,T,S] (reporting only)."""
  m = mask[:, 0].astype(fq.dtype)[:, None]  # [B,1,T,S]
  num = dot_scores(fq if rq is None else rq, fk if rk is None else rk) * m
  den = (dot_scores(fq, fk) * m).sum(-1, keepdims=True)
  return num / jnp.where(den > 0, den, 1.0)


def softmax_weights(logits, mask, bias, dtype):
  """softmax over keys of (logits + bias), masked keys at NEG_INF, in float32: [B,H,T,S]."""
  if bias is not None:
    logits = logits + bias
  logits = jnp.where(mask, logits.astype(jnp.float32), NEG_INF)
  return jax.nn.softmax(logits, axis=-1).astype(dtype)


# ---------------------------------------------------------------- registry of attention kinds
def scaled_dot_logits(module: nn.Module, q: jax.Array, k: jax.Array) -> jax.Array:
  return dot_scores(q, k) * module.logit_scale


def additive_logits(module: nn.Module, q: jax.Array, k: jax.Array) -> jax.Array:
  cfg = module.cfg
  v_vec = module.param(
    'score_v',
    nn.with_logical_partitioning(nn.initializers.normal(cfg.hd**-0.5), ('heads', 'kv')),
    (cfg.num_heads, cfg.hd),
  )
  return additive_scores(q, k, v_vec.astype(q.dtype))


@dataclasses.dataclass(frozen=True)
class Kind:
  """One attention kind. A new softmax scoring is one `logits` function plus one entry."""

  logits: Callable | None  # (module, q, k) -> softmax logits [B,H,T,S]; None: linear attention
  takes: frozenset[str]  # the position-scheme hooks it can take (positions.HOOKS)
  fused: bool = False  # logits are q.k / sqrt(D): may run as jax.nn.dot_product_attention
  shared_qk: bool = False  # one projection for queries and keys (so no grouped K/V heads)
  # (module, h [B,T,d], K) -> kernel logits: self-attention is a convolution block
  # (model/convolution.py) and cross-attention is `dot`, as in Wu et al. 2019.
  conv: Callable | None = None
  # (cfg, n_q, m) -> forward FLOPs beyond the dot-attention count (m = keys) or, for a conv kind,
  # beyond the convolution block's (m = kernel taps); train/metrics.py adds it.
  extra_flops: Callable | None = None


def _additive_flops(cfg, q_len, kv_len):
  return q_len * kv_len * cfg.num_heads * cfg.hd * 3  # add, tanh, dot with v


def _dynamic_kernel_flops(cfg, n, taps):
  return 2 * n * cfg.d_model * cfg.num_heads * taps  # the per-position kernel


_ALL = frozenset(pos_lib.HOOKS)
# The order is the order of every choice list and error message.
KINDS: dict[str, Kind] = {
  'dot': Kind(scaled_dot_logits, _ALL, fused=True),
  'additive': Kind(additive_logits, frozenset({'embed', 'bias'}), extra_flops=_additive_flops),
  'shared_qk': Kind(scaled_dot_logits, _ALL, fused=True, shared_qk=True),
  'linear': Kind(None, frozenset({'embed', 'rotate'})),
  'lightconv': Kind(None, frozenset({'embed'}), conv=conv_lib.light_kernel),
  'dynamicconv': Kind(
    None, frozenset({'embed'}), conv=conv_lib.dynamic_kernel, extra_flops=_dynamic_kernel_flops
  ),
}
# Softmax attention kernels (an implementation choice, not a kind): xla / cudnn =
# jax.nn.dot_product_attention(implementation=...); auto = xla; einsum = the explicit path the other
# variants use (same speed as xla on the 2-core CPU).
IMPLS = ('auto', 'einsum', 'xla', 'cudnn')


def unsupported(kind: str) -> tuple[str, ...]:
  """Position schemes attention `kind` cannot take: those with a hook it does not take."""
  return tuple(name for name, s in pos_lib.SCHEMES.items() if not s.hooks <= KINDS[kind].takes)


def cross_attention_from_cache(q, k_cache, v_t, mask, scale):
  """Scaled-dot attention of q [B,T,H,D] over cached cross keys k_cache [B,K,S,D] and values
  v_t [B,K,D,S] (grouped heads h = k * G + g): (out [B,T,H,D], weights [B,H,T,S]).

  Both cached operands are read in the layout they are stored in. Through the model's [B,S,K,D]
  view, XLA hoisted that loop-invariant view out of the decode loop and then re-laid the keys
  and values out for the two matmuls on every step (beam-4 at size=small, 16 sentences on one
  device: 0.34 ms of ~8.5 ms op time per step); V stored [B,K,D,S] is the layout XLA:CPU chose
  for the weights-times-values matmul."""
  b, t, h, d = q.shape
  nk = k_cache.shape[1]
  qg = q.reshape(b, t, nk, h // nk, d)
  logits = jnp.einsum('btkgd,bksd->bkgts', qg, k_cache).reshape(b, h, t, -1) * scale
  weights = softmax_weights(logits, mask, None, q.dtype)
  out = jnp.einsum('bkgts,bkds->btkgd', weights.reshape(b, nk, h // nk, t, -1), v_t)
  return out.reshape(b, t, h, d), weights


def _to_cache(x_BSKD):
  """Cached K/V are stored head-major, [B,K,S,D]: the layout of the attention matmuls, whose
  batch dimensions (B, K) must lead. Stored token-major, every decode step copied the whole cache
  into that layout again (beam-4 at size=small: ~1/4 of op time). Batch stays on axis 0 for
  beam reordering (model/decoding.py)."""
  return x_BSKD.transpose(0, 2, 1, 3)


def _from_cache(x_BKSD):
  """The cache in the model's [B,S,K,D] view. XLA folds this transpose into the matmuls for the
  self-attention cache. Cross-attention of scaled-dot kinds does not take this view of its
  loop-invariant K/V (`cross_attention_from_cache`)."""
  return x_BKSD.transpose(0, 2, 1, 3)


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
    kind, scheme = KINDS[cfg.attention], pos_lib.SCHEMES[self.position]
    if kind.conv is not None:  # a convolution model's cross-attention
      assert not self.is_self, 'self-attention of a convolution kind is model.convolution'
      kind = KINDS['dot']
    proj = lambda n, name, s=1.0: DenseGeneral(
      (n, d), ('embed', 'heads', 'kv'), dtype=dt, name=name, init_scale=s
    )
    q_proj = proj(nh, 'query', 1.0 / d if self.unscaled else 1.0)  # T5: 1/sqrt(D) in the init
    shared = kind.shared_qk and self.is_self  # Reformer shares QK in self-attention only
    k_proj = q_proj if shared else proj(nk, 'key')
    v_proj = proj(nk, 'value')
    q = constrain(q_proj(x), ('batch', 'length', 'heads', 'kv'))

    if self.is_self:
      k, v = k_proj(x), v_proj(x)
      if shared:  # unit-length keys (before rotary, which keeps lengths; before the cache)
        k = k * jax.lax.rsqrt(
          jnp.sum(jnp.square(k.astype(jnp.float32)), -1, keepdims=True) + 1e-12
        ).astype(k.dtype)
    elif self.decode:  # cross K/V: computed when the cache is created, reused afterwards; the
      # `cross_` prefix tells beam search they depend on the source only (model/decoding.py)
      k_cache = self.variable('cache', 'cross_k', lambda: _to_cache(k_proj(kv_input))).value
      if self.head_major_cross(kind):  # V as [B,K,D,S]: see cross_attention_from_cache
        v_t = self.variable('cache', 'cross_v', lambda: v_proj(kv_input).transpose(0, 2, 3, 1))
        return self._out(self._cross_from_cache(q, k_cache, v_t.value, mask))
      k = _from_cache(k_cache)
      v = _from_cache(self.variable('cache', 'cross_v', lambda: _to_cache(v_proj(kv_input))).value)
    else:
      k, v = k_proj(kv_input), v_proj(kv_input)

    rows = q.shape[0]
    if not self.is_self:  # beam rows that share their sentence's source (model/transformer.py)
      q = fold_beams(q, k.shape[0])
    if kind.logits is None:
      out = self._linear(q, k, v, mask, q_pos, cache_index, scheme.rotate)
    else:
      if scheme.rotate is not None:  # by each token's own position, before it enters the cache
        q, k = scheme.rotate(q, q_pos), scheme.rotate(k, q_pos)
      if self.is_self and self.decode:
        k, v = self._append(k, v, mask.shape[-1], cache_index)
      out = self._softmax(kind, scheme, q, k, v, mask, bias, q_pos, k_pos)
    return self._out(out.reshape(rows, -1, *out.shape[2:]))

  def _out(self, out):
    """The output projection of the heads [B,T,H,D] -> [B,T,d_model]."""
    out = constrain(out, ('batch', 'length', 'heads', 'kv'))
    cfg = self.cfg
    return DenseGeneral(
      (cfg.d_model,), ('heads', 'kv', 'embed'), in_dims=2, dtype=cfg.jdtype, name='out'
    )(out)

  def head_major_cross(self, kind) -> bool:
    """Cached cross-attention of a scaled-dot kind reads its K [B,K,S,D] and V [B,K,D,S] as
    stored (`cross_attention_from_cache`); cuDNN, when asked for, keeps the fused kernel."""
    cfg = self.cfg
    dropout_on = not self.deterministic and cfg.attention_dropout > 0
    plain = kind.fused and not dropout_on and cfg.attention_impl != 'cudnn'
    return plain and self.decode and not self.is_self

  def _cross_from_cache(self, q, k_cache, v_t, mask):
    rows = q.shape[0]
    out, weights = cross_attention_from_cache(
      fold_beams(q, k_cache.shape[0]), k_cache, v_t, mask, self.logit_scale
    )
    if self.is_mutable_collection('intermediates'):
      self._report(weights)
    return out.reshape(rows, -1, *out.shape[2:])

  @property
  def unscaled(self) -> bool:
    """q.k logits without 1/sqrt(D) (positions.Scheme.unscaled: T5); cross-attention follows
    the decoder's scheme. Only kinds whose logits are scaled q.k have a scale to drop."""
    schemes, cfg = pos_lib.SCHEMES, self.cfg
    scheme = schemes[self.position if self.is_self else cfg.dec_pos]
    return scheme.unscaled and KINDS[cfg.attention].fused

  @property
  def logit_scale(self) -> float:
    return 1.0 if self.unscaled else self.cfg.hd**-0.5

  def _append(self, k, v, length, index):
    """Writes the new tokens' K/V [B,T,K,D] at `index` of the cache; returns all of it [B,S,K,D]."""
    b, _, nk, d = k.shape
    ck = self.variable('cache', 'k', jnp.zeros, (b, nk, length, d), k.dtype)
    cv = self.variable('cache', 'v', jnp.zeros, (b, nk, length, d), v.dtype)
    ck.value = jax.lax.dynamic_update_slice(ck.value, _to_cache(k), (0, 0, index, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, _to_cache(v), (0, 0, index, 0))
    return _from_cache(ck.value), _from_cache(cv.value)

  def _report(self, weights):
    """Sow the attention weights when the caller asked for intermediates (plots, analysis)."""
    self.sow('intermediates', 'attention_weights', weights)

  def _softmax(self, kind, scheme, q, k, v, mask, bias, q_pos, k_pos):
    cfg = self.cfg
    report = self.is_mutable_collection('intermediates')
    dropout_on = not self.deterministic and cfg.attention_dropout > 0
    if kind.fused and scheme.relative is None and not dropout_on:
      impl = 'xla' if cfg.attention_impl == 'auto' else cfg.attention_impl
      if impl != 'einsum':
        if report:  # the kernel never materialises the weights: compute them aside
          self._report(softmax_weights(kind.logits(self, q, k), mask, bias, q.dtype))
        b = None if bias is None else bias.astype(q.dtype)
        return jax.nn.dot_product_attention(
          q, k, v, bias=b, mask=mask, scale=1.0 if self.unscaled else None, implementation=impl
        )
    logits = kind.logits(self, q, k)
    value_term = None
    if scheme.relative is not None:
      logit_term, value_term = scheme.relative(self, q_pos, k_pos, cfg)
      logits = logits + logit_term(q)
    weights = softmax_weights(logits, mask, bias, q.dtype)
    if report:
      self._report(weights)
    weights = Dropout(cfg.attention_dropout, cfg.dropout_mask)(
      weights, deterministic=self.deterministic
    )
    out = combine(weights, v)
    if value_term is not None:
      out = out + value_term(weights)
    return out

  def _linear(self, q, k, v, mask, q_pos, index, rotate):
    fq, fk = elu_feature(q.astype(jnp.float32)), elu_feature(k.astype(jnp.float32))
    v = v.astype(jnp.float32)
    rq = rk = None
    if rotate is not None:  # numerator only (RoFormer sec. 3.3)
      rq, rk = rotate(fq, q_pos), rotate(fk, q_pos)
    if not self.decode:
      if self.is_mutable_collection('intermediates'):
        self._report(linear_weights(fq, fk, mask, rq, rk).astype(q.dtype))
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

"""Position schemes: one registry, `SCHEMES`, through which every scheme goes.

Every scheme takes explicit integer positions per token (`[B, T]`), never the index in an array:
that single rule makes packed rows (positions restart per segment) and KV-cached decoding (the new
token's position is passed in, the cached keys keep theirs) correct for every scheme.

A scheme is one function plus one `SCHEMES` entry. The entry's hooks say where it acts; the
modules call the hooks, never a scheme by name:

| hook       | schemes                | called by                   |
|------------|------------------------|-----------------------------|
| (none)     | none                   | -                           |
| `embed`    | sinusoidal, learned    | layers.EmbedInput           |
| `rotate`   | rotary (RoFormer)      | attention, on q and k       |
| `bias`     | t5, t5_unscaled, alibi | transformer, once per stack |
| `relative` | shaw (Shaw et al.)     | attention, per layer        |

| hook       | signature                                                   |
|------------|-------------------------------------------------------------|
| (none)     | -                                                           |
| `embed`    | `(module, pos[B,T], cfg) -> [B,T,d_model]` added            |
| `rotate`   | `(x[B,T,H,D], pos[B,T]) -> x`                               |
| `bias`     | `(module, q_pos, k_pos, cfg, bidirectional) -> [B,H,Tq,Tk]` |
| `relative` | `(module, q_pos, k_pos, cfg) -> (logit_term, value_term)`   |

`relative` returns two functions: `logit_term(q[B,Tq,H,D]) -> [B,H,Tq,Tk]` (added to the scaled
logits) and `value_term(weights[B,H,Tq,Tk]) -> [B,Tq,H,D]` (added to the attention output).
`check(cfg) -> message | None` is the scheme's own config check, run by model/config.py when a
stack uses it; `check_length(length, cfg, what, alternative)` raises for a static length the scheme
cannot reach (the learned table, checked by the decoder for its cache).

Two bias schemes, and what their papers say:
- `t5` adds T5's bucketed bias (Raffel et al. 2020) to our 1/sqrt(D)-scaled logits: the form
  study 1 used. `t5_unscaled` is T5's own attention: logits q.k + bias with no 1/sqrt(D), the
  scale folded into the query projection's init (std (d_model * D)^-1/2, as Mesh TensorFlow
  initialises T5), in every attention of the model (cross-attention follows the decoder's
  scheme). At init the two give the same logits; training differs, because Adam's step is the
  same size for a parameter 1/sqrt(D) as large.
- `alibi` (Press et al. 2022) is defined for causal attention, where -m * (i - j) and the code's
  -m * |i - j| agree. For a bidirectional encoder the ALiBi author's note on encoders
  (ofirpress/attention_with_linear_biases issue #5) gives the full matrix -m * |j - i|, and that
  is what the encoder uses. Its consequence, which a study must keep in mind: the bias is
  symmetric, so with no other position signal (cross-attention carries none) the encoder is
  mirror-equivariant: a reversed segment gives the reversed encoder states
  (tests/model/test_positions.py checks it), and the model tells a sentence from its reversal
  only through asymmetric content such as the trailing EOS. The length-generalisation study's
  encoder-decoder ALiBi rows use this form.
`module` is the Flax module that owns any parameters of the scheme (created with `module.param`).
Cross-attention always uses `none`. Which hooks each attention kind can take is recorded in
attention.KINDS; the (attention x position) refusal table derives from it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


# ---------------------------------------------------------------- embed: sinusoidal, learned
def sinusoid_table(positions: jax.Array, d: int) -> jax.Array:
  """Vaswani et al. 2017: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same)."""
  inv_freq = 10000.0 ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  angle = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(*positions.shape, d)


def sinusoidal_embed(module: nn.Module, positions: jax.Array, cfg) -> jax.Array:
  del module
  return sinusoid_table(positions, cfg.d_model)


def check_learned_length(length: int, cfg, what: str, alternative: str) -> None:
  """The learned table has max_len rows: a static `length` beyond it fails, naming the flag.

  Positions are data and cannot raise under jit; a row's positions stay below its width (and a
  decode cache's length), so checking those static sizes covers every path."""
  if length > cfg.max_len:
    raise ValueError(
      f'position=learned: {what} {length} tokens needs model.max_len >= {length} '
      f'(it is {cfg.max_len}); raise --config.model.max_len or {alternative}.'
    )


def learned_embed(module: nn.Module, positions: jax.Array, cfg) -> jax.Array:
  check_learned_length(positions.shape[-1], cfg, 'a sequence of', 'use a relative scheme')
  table = module.param(
    'pos_table',
    nn.with_logical_partitioning(nn.initializers.normal(cfg.d_model**-0.5), (None, 'embed')),
    (cfg.max_len, cfg.d_model),
  )
  return jnp.take(table, positions, axis=0, mode='clip')


# ---------------------------------------------------------------- rotary (RoFormer, Su et al. 2021)
def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotate each pair (x[2i], x[2i+1]) by angle pos * base^(-2i/D).
  x: [B,T,H,D], positions: [B,T]."""
  d = x.shape[-1]
  inv_freq = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  angle = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B,T,1,D/2]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], d // 2, 2)
  x0, x1 = pairs[..., 0], pairs[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


# ---------------------------------------------------------------- bias: t5, alibi
def t5_bucket(
  relative: jax.Array, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
  """Raffel et al. 2020 bucket of `relative = key_pos - query_pos`.

  Half the buckets (per direction) hold exact small distances, the rest grow logarithmically up to
  `max_distance`; everything farther shares the last bucket. Causal: only distances to the past.
  """
  n = num_buckets
  offset = jnp.zeros_like(relative)
  if bidirectional:
    n //= 2
    offset = jnp.where(relative > 0, n, 0)
    dist = jnp.abs(relative)
  else:
    dist = jnp.maximum(-relative, 0)
  exact = n // 2
  log_ratio = jnp.log(jnp.maximum(dist, 1).astype(jnp.float32) / exact) / math.log(
    max_distance / exact
  )
  large = exact + (log_ratio * (n - exact)).astype(jnp.int32)
  large = jnp.minimum(large, n - 1)
  return offset + jnp.where(dist < exact, dist, large)


def t5_bias(module: nn.Module, q_pos: jax.Array, k_pos: jax.Array, cfg, bidirectional: bool):
  table = module.param(
    't5_table',
    nn.with_logical_partitioning(nn.initializers.normal(1.0), ('relpos', 'heads')),
    (cfg.t5_num_buckets, cfg.num_heads),
  )
  bucket = t5_bucket(
    k_pos[:, None, :] - q_pos[:, :, None], bidirectional, cfg.t5_num_buckets, cfg.t5_max_distance
  )  # [B,Tq,Tk]
  return jnp.transpose(jnp.take(table, bucket, axis=0), (0, 3, 1, 2))  # [B,H,Tq,Tk]


def alibi_slopes(num_heads: int) -> list[float]:
  """Press et al. 2022: geometric slopes 2^(-8/n), 2^(-16/n), ...; for n not a power of two,
  the slopes of the largest power of two m < n plus every other slope of 2m."""

  def geometric(n):
    return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

  m = 2 ** int(math.floor(math.log2(num_heads)))
  if m == num_heads:
    return geometric(num_heads)
  return geometric(m) + geometric(2 * m)[0::2][: num_heads - m]


def alibi_bias(module: nn.Module, q_pos: jax.Array, k_pos: jax.Array, cfg, bidirectional: bool):
  # -slope*|distance| equals the paper's slope*(j-i) under a causal mask, and is the ALiBi
  # author's form for a bidirectional encoder (see the module docstring).
  del module, bidirectional
  slopes = jnp.asarray(alibi_slopes(cfg.num_heads), jnp.float32)
  dist = jnp.abs(k_pos[:, None, :] - q_pos[:, :, None]).astype(jnp.float32)
  return -slopes[None, :, None, None] * dist[:, None]


# ---------------------------------------------------------------- relative: shaw
def shaw_tables(module: nn.Module, cfg):
  """Relative key and value embeddings a^K, a^V: [2k+1, head_dim], shared across heads."""
  size = 2 * cfg.shaw_max_distance + 1
  init = nn.with_logical_partitioning(nn.initializers.normal(cfg.hd**-0.5), ('relpos', 'kv'))
  return module.param('shaw_k', init, (size, cfg.hd)), module.param('shaw_v', init, (size, cfg.hd))


def shaw_index(q_pos: jax.Array, k_pos: jax.Array, max_distance: int) -> jax.Array:
  """Row of the relative table for each (query, key): clip(j - i, -k, k) + k. [B,Tq,Tk]."""
  rel = jnp.clip(k_pos[:, None, :] - q_pos[:, :, None], -max_distance, max_distance)
  return rel + max_distance


def shaw_logits(q: jax.Array, table_k: jax.Array, index: jax.Array) -> jax.Array:
  """q_i . a^K_ij for every pair: [B,H,Tq,Tk]. q: [B,Tq,H,D]."""
  q_r = jnp.einsum('bthd,rd->bhtr', q, table_k.astype(q.dtype))
  idx = jnp.broadcast_to(index[:, None], (q_r.shape[0], q_r.shape[1]) + index.shape[1:])
  return jnp.take_along_axis(q_r, idx, axis=-1)


def shaw_values(weights: jax.Array, table_v: jax.Array, index: jax.Array) -> jax.Array:
  """sum_j w_ij a^V_ij: [B,Tq,H,D]. weights: [B,H,Tq,Tk]."""
  onehot = jax.nn.one_hot(index, table_v.shape[0], dtype=weights.dtype)  # [B,Tq,Tk,R]
  w_r = jnp.einsum('bhts,btsr->bhtr', weights, onehot)
  return jnp.einsum('bhtr,rd->bthd', w_r, table_v.astype(weights.dtype))


def shaw_relative(module: nn.Module, q_pos: jax.Array, k_pos: jax.Array, cfg):
  """Shaw et al. 2018 per layer: q_i.a^K_ij / sqrt(D) on the logits, sum_j w_ij a^V_ij
  on the output."""
  table_k, table_v = shaw_tables(module, cfg)
  index = shaw_index(q_pos, k_pos, cfg.shaw_max_distance)
  return (
    lambda q: shaw_logits(q, table_k, index) * (cfg.hd**-0.5),
    lambda weights: shaw_values(weights, table_v, index),
  )


# ---------------------------------------------------------------- checks
def _even(name: str, attr: str, what: str):
  def check(cfg):
    value = getattr(cfg, attr)
    return f'model.position={name} needs an even {what}, got {value}.' if value % 2 else None

  return check


def _learned_check(cfg):
  return (
    None
    if cfg.max_len > 0
    else 'model.position=learned needs model.max_len > 0 (size of the table).'
  )


def _t5_check(cfg):
  if cfg.t5_num_buckets < 4 or cfg.t5_max_distance <= cfg.t5_num_buckets // 4:
    return 'model.t5_num_buckets must be >= 4 and model.t5_max_distance > num_buckets / 4.'
  return None


def _shaw_check(cfg):
  return 'model.shaw_max_distance must be >= 1.' if cfg.shaw_max_distance < 1 else None


# ---------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class Scheme:
  """One position scheme: at most one of the hooks below (see the table at the top)."""

  embed: Callable | None = None  # (module, pos, cfg) -> [B,T,d_model], added to the embeddings
  rotate: Callable | None = None  # (x, pos) -> x, applied to q and k of self-attention
  bias: Callable | None = None  # (module, q_pos, k_pos, cfg, bidirectional) -> [B,H,Tq,Tk]
  relative: Callable | None = None  # (module, q_pos, k_pos, cfg) -> (logit_term, value_term)
  check: Callable | None = None  # (cfg) -> error message or None
  check_length: Callable | None = None  # (length, cfg, what, alternative): raise if out of reach
  # q.k logits without 1/sqrt(D), the scale folded into the query projection's init instead
  # (T5: Raffel et al. 2020, Mesh TensorFlow's attention). Not a hook: any kind may take it.
  unscaled: bool = False

  @property
  def hooks(self) -> frozenset[str]:
    return frozenset(h for h in HOOKS if getattr(self, h) is not None)


HOOKS = ('embed', 'rotate', 'bias', 'relative')

# The order is the order of every choice list and error message.
SCHEMES: dict[str, Scheme] = {
  'none': Scheme(),
  'sinusoidal': Scheme(embed=sinusoidal_embed, check=_even('sinusoidal', 'd_model', 'd_model')),
  'learned': Scheme(embed=learned_embed, check=_learned_check, check_length=check_learned_length),
  'shaw': Scheme(relative=shaw_relative, check=_shaw_check),
  't5': Scheme(bias=t5_bias, check=_t5_check),
  't5_unscaled': Scheme(bias=t5_bias, check=_t5_check, unscaled=True),
  'rotary': Scheme(rotate=apply_rotary, check=_even('rotary', 'hd', 'head_dim')),
  'alibi': Scheme(bias=alibi_bias),
}
NAMES = tuple(SCHEMES)

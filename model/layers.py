"""Building blocks: projections with logical axes, embeddings, feed-forward, norms.

Every parameter is created through `nn.with_logical_partitioning`, so `module.init` returns boxed
params whose axis names (`vocab, embed, heads, kv, mlp, relpos`; `layers` added by nn.scan) the
trainer maps onto the mesh with `config.mesh_rules`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import positions as pos_lib
from model.dropout import Dropout

Axes = Sequence[str | None]


def constrain(x: jax.Array, axes: Axes) -> jax.Array:
  """Activation sharding hint by logical names; a no-op unless axis rules are active."""
  return nn.with_logical_constraint(x, tuple(axes))


class DenseGeneral(nn.Module):
  """y = x . W contracting the last `in_dims` axes of x; W has shape in_shape + features.

  `axes` names every kernel axis (inputs first). Fan-in init over all contracted axes.
  """

  features: tuple[int, ...]
  axes: tuple
  in_dims: int = 1
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  init_scale: float = 1.0  # variance = init_scale / fan_in

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[x.ndim - self.in_dims :]
    shape = tuple(in_shape) + tuple(self.features)
    n_in = len(in_shape)
    init = nn.initializers.variance_scaling(
      self.init_scale,
      'fan_in',
      'truncated_normal',
      in_axis=tuple(range(n_in)),
      out_axis=tuple(range(n_in, len(shape))),
    )
    kernel = self.param('kernel', nn.with_logical_partitioning(init, tuple(self.axes)), shape)
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
    if self.use_bias:
      bias = self.param(
        'bias',
        nn.with_logical_partitioning(nn.initializers.zeros_init(), tuple(self.axes[n_in:])),
        tuple(self.features),
      )
      y = y + bias.astype(self.dtype)
    return y


class LayerNorm(nn.Module):
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.LayerNorm(
      epsilon=1e-6,
      dtype=self.dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)),
    )(x)


class Embed(nn.Module):
  """Token embedding table [vocab, embed]; `attend` gives the tied output projection."""

  vocab_size: int
  d_model: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    # std d^-1/2, so the sqrt(d) scale of the paper gives unit-variance inputs and tied logits
    # of unit variance at init.
    self.table = self.param(
      'embedding',
      nn.with_logical_partitioning(nn.initializers.normal(self.d_model**-0.5), ('vocab', 'embed')),
      (self.vocab_size, self.d_model),
    )

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.table, ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    return jnp.einsum('bte,ve->btv', x.astype(self.dtype), self.table.astype(self.dtype))


class EmbedInput(nn.Module):
  """Token embedding (scaled by sqrt(d_model) if configured) + additive position scheme +
  dropout."""

  cfg: object
  position: str
  deterministic: bool = True

  @nn.compact
  def __call__(self, embed: Embed, ids: jax.Array, positions: jax.Array) -> jax.Array:
    cfg = self.cfg
    x = embed(ids)
    if cfg.scale_embeddings:
      x = x * jnp.sqrt(jnp.asarray(cfg.d_model, x.dtype))
    scheme = pos_lib.SCHEMES[self.position]
    if scheme.embed is not None:
      x = x + scheme.embed(self, positions, cfg).astype(x.dtype)
    x = Dropout(cfg.dropout, cfg.dropout_mask)(x, deterministic=self.deterministic)
    return constrain(x, ('batch', 'length', 'embed'))


class FeedForward(nn.Module):
  """relu / gelu: W2 act(W1 x + b1) + b2 (the paper's FFN); swiglu: W2 (silu(W1 x) * W3 x)."""

  cfg: object
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dt = self.cfg, self.cfg.jdtype
    bias = cfg.ffn != 'swiglu'
    h = DenseGeneral((cfg.d_ff,), ('embed', 'mlp'), use_bias=bias, dtype=dt, name='wi')(x)
    if cfg.ffn == 'relu':
      h = jax.nn.relu(h)
    elif cfg.ffn == 'gelu':
      h = jax.nn.gelu(h)
    else:
      h = jax.nn.silu(h) * DenseGeneral((cfg.d_ff,), ('embed', 'mlp'), dtype=dt, name='wg')(x)
    h = constrain(h, ('batch', 'length', 'mlp'))
    return DenseGeneral((cfg.d_model,), ('mlp', 'embed'), use_bias=bias, dtype=dt, name='wo')(h)


def output_logits(cfg, embed: Embed, x: jax.Array, parent_dense=None) -> jax.Array:
  """Tied (x . E^T) or untied projection to the vocabulary, in float32."""
  logits = embed.attend(x) if cfg.tie_output else parent_dense(x)
  return constrain(logits.astype(jnp.float32), ('batch', 'length', 'vocab'))

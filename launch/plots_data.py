"""The arrays launch.plots draws: position-scheme pictures computed by model/positions.py (so
they show what runs) and the cross-attention weights of a trained encoder-decoder.
"""

from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np

import model
from model import positions
from model import transformer


# ---------------------------------------------------------------------------------------------
# Position schemes: the arrays come from model/positions.py, so the pictures show what runs
# ---------------------------------------------------------------------------------------------
def sinusoid_table(num_positions: int, d_model: int) -> np.ndarray:
  """The [num_positions, d_model] sinusoidal embedding table of positions 0..num_positions-1."""
  table = jax.jit(positions.sinusoid_table, static_argnums=1)(jnp.arange(num_positions), d_model)
  return np.asarray(table)


def rotary_similarity(
  head_dim: int, max_distance: int, seed: int = 0, draws: int = 256
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """q.k after rotary rotation against key - query distance, normalised to 1 at distance 0.

  Two curves: q = k = all-ones (RoFormer's long-term decay picture) and q = k drawn from a
  standard normal, averaged over `draws` vectors.
  """
  distances = np.arange(-max_distance, max_distance + 1)
  query_pos = max_distance  # any position: rotary scores depend on the distance only

  @jax.jit
  def mean_similarity(v):  # v: [n, D], q = k = v
    n = v.shape[0]
    q = positions.apply_rotary(v[:, None, None, :], jnp.full((n, 1), query_pos))[:, 0, 0]
    k_pos = jnp.broadcast_to(query_pos + jnp.asarray(distances), (n, len(distances)))
    k = positions.apply_rotary(
      jnp.broadcast_to(v[:, None, None, :], (n, len(distances), 1, v.shape[1])), k_pos
    )
    return jnp.einsum('nd,nkd->k', q, k[:, :, 0]) / n

  vecs = {
    'q = k = ones': np.ones((1, head_dim), np.float32),
    f'q = k ~ N(0, I), mean of {draws}': np.random.default_rng(seed)
    .standard_normal((draws, head_dim))
    .astype(np.float32),
  }
  curves = {}
  for label, v in vecs.items():
    sim = np.asarray(mean_similarity(jnp.asarray(v)))
    curves[label] = sim / sim[max_distance]
  return distances, curves


def alibi_bias_hqk(num_heads: int, length: int, bidirectional: bool = True) -> np.ndarray:
  """ALiBi bias [heads, query, key] for positions 0..length-1 (causal: future keys = -inf)."""
  cfg = types.SimpleNamespace(num_heads=num_heads)
  # One compiled call: eager op-by-op dispatch is many times slower on a busy CPU.
  bias_of = jax.jit(lambda pos: positions.alibi_bias(None, pos, pos, cfg, bidirectional))
  bias = np.asarray(bias_of(jnp.arange(length, dtype=jnp.int32)[None]))[0]
  if not bidirectional:
    bias = np.where(np.tril(np.ones((length, length), bool)), bias, np.nan)
  return bias


def t5_bias_hqk(
  table: np.ndarray, length: int, bidirectional: bool, max_distance: int = 128
) -> np.ndarray:
  """T5 bias [heads, query, key] from a [num_buckets, heads] table (learned or initial)."""
  table = np.asarray(table, np.float32)
  bucket_of = jax.jit(
    lambda rel: positions.t5_bucket(rel, bidirectional, table.shape[0], max_distance)
  )
  pos = np.arange(length, dtype=np.int32)
  bucket = np.asarray(bucket_of(pos[None, :] - pos[:, None]))  # [Tq, Tk]
  bias = np.transpose(table[bucket], (2, 0, 1))
  if not bidirectional:  # keys after the query are masked anyway; blank them in the picture
    bias = np.where(np.tril(np.ones((length, length), bool))[None], bias, np.nan)
  return bias


def find_param(params, name: str) -> list[tuple[str, np.ndarray]]:
  """Every (path, array) leaf of a parameter tree whose last key is `name`."""
  found = []

  def walk(node, path):
    if isinstance(node, dict) or hasattr(node, 'items'):
      for k, v in node.items():
        walk(v, f'{path}/{k}' if path else str(k))
    elif path.rsplit('/', 1)[-1] == name:
      found.append((path, np.asarray(getattr(node, 'value', node))))

  walk(params, '')
  return found


# ---------------------------------------------------------------------------------------------
# Cross-attention weights of a trained encoder-decoder
# ---------------------------------------------------------------------------------------------
def cross_attention_weights(model_cfg, params, batch) -> np.ndarray:
  """Cross-attention weights [B, layers, heads, target, source] of a teacher-forced batch.

  Every attention layer reports its own weights when the 'intermediates' collection is mutable
  (model/attention.py), whatever its scoring; this reads those of each `cross_attn` block. The
  model runs unscanned (same math, per-layer paths). Target rows are 0 on padding.
  """
  mc = model.make_config(model_cfg)
  if mc.arch != 'encoder_decoder':
    raise ValueError(
      f'model.arch={mc.arch!r} has no Transformer cross-attention to plot; '
      "cross-attention heatmaps need arch='encoder_decoder'"
    )
  flat = dataclasses.replace(mc, scan_layers=False, remat='none')
  params = transformer.unstack_layers(params) if mc.scan_layers else params
  module = model.build_model(flat)

  def weights_of(params, batch):
    _, state = module.apply(
      {'params': params}, batch, deterministic=True, mutable=['intermediates']
    )
    decoder = state['intermediates']['decoder']
    real = (batch['targets_segment'] > 0)[:, None, :, None]  # [B,1,T,1]
    layers = [
      decoder[f'layer_{i}']['cross_attn']['attention_weights'][0].astype(jnp.float32)
      for i in range(flat.dec_layers)
    ]
    return jnp.stack([w * real for w in layers], axis=1)

  batch = {k: jnp.asarray(v) for k, v in batch.items() if k not in ('index', 'length')}
  return np.asarray(jax.jit(weights_of)(params, batch))

"""Lightweight and dynamic convolutions (Wu et al. 2019, ICLR, "Pay Less Attention with
Lightweight and Dynamic Convolutions") in the self-attention slot of either stack.

The block (the paper's Figure 2b; fairseq `LightConvEncoderLayer`):
  x -> Linear(d, 2d) -> GLU -> depthwise convolution over time -> Linear(d, d)
The convolution has H = `model.num_heads` heads: the d channels are split into H groups of d / H
consecutive channels, and each group shares one kernel of K taps, normalised by a softmax over
its taps (paper eq. 3). DropConnect (`model.conv_weight_dropout`, fairseq's `--weight-dropout`)
drops normalised kernel weights in training, with the usual 1 / (1 - p) rescaling.
- `lightconv`: one kernel [H, K] per layer, the same at every position.
- `dynamicconv`: the kernel of position i is predicted from that position alone (paper eq. 4):
  W_i = softmax(h_i . W_Q) with W_Q [d, H, K], so the kernel changes with the token, not with
  the whole context as attention's weights do.
K is set per layer by `model.conv_kernels` (the paper grows it with depth: 3, 7, 15, 31, ...;
layer i takes entry i, the last entry repeats). The encoder's kernel is centred (taps at offsets
-(K-1)//2 .. K//2, as fairseq pads), the decoder's is causal (offsets -(K-1) .. 0).

A tap reads the key whose explicit position is the query's position plus the tap's offset, in the
same segment, never padding: packed rows never mix, and a sequence edge reads zeros, as the
paper's zero padding does. The convolution is evaluated as a band matrix of weights [B,H,T,S]
over the keys (the same shape as attention weights, reported as `attention_weights` for plots),
so one formula serves full passes and cached decoding: while decoding, each layer's cache is the
last K - 1 GLU outputs with their positions and segments, and a new token's keys are that window
plus itself.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.dropout import Dropout
from model.layers import DenseGeneral, constrain


def light_kernel(module: nn.Module, h: jax.Array, size: int) -> jax.Array:
  """LightConv's kernel logits: one [H, K] parameter per layer, shared by every position."""
  del h
  init = nn.initializers.xavier_uniform()
  return module.param(
    'kernel', nn.with_logical_partitioning(init, ('heads', None)), (module.cfg.num_heads, size)
  )


def dynamic_kernel(module: nn.Module, h: jax.Array, size: int) -> jax.Array:
  """DynamicConv's kernel logits [B,T,H,K]: a linear function of each position's input."""
  cfg = module.cfg
  proj = DenseGeneral(
    (cfg.num_heads, size), ('embed', 'heads', None), dtype=cfg.jdtype, name='kernel_proj'
  )
  return proj(h)


def offsets(size: int, causal: bool) -> tuple[int, int]:
  """(first, last) key offset of a kernel of `size` taps: causal, or centred as fairseq pads."""
  first = -(size - 1) if causal else -((size - 1) // 2)
  return first, first + size - 1


def band_weights(kernel, q_seg, q_pos, k_seg, k_pos, first: int) -> jax.Array:
  """The convolution as weights over keys: [B,H,T,S].

  kernel: normalised taps, [H,K] (one kernel) or [B,T,H,K] (one per query). Query i gives key j
  the weight of tap k_pos[j] - q_pos[i] - first when that tap exists and j is a real key of i's
  segment; every other weight is 0.
  """
  size = kernel.shape[-1]
  tap = k_pos[:, None, :] - q_pos[:, :, None] - first  # [B,T,S]
  ok = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] > 0)
  ok &= (tap >= 0) & (tap < size)
  onehot = ((tap[..., None] == jnp.arange(size)) & ok[..., None]).astype(kernel.dtype)
  if kernel.ndim == 2:
    return jnp.einsum('btsk,hk->bhts', onehot, kernel)
  return jnp.einsum('btsk,bthk->bhts', onehot, kernel)


def mix(weights: jax.Array, keys: jax.Array) -> jax.Array:
  """Depthwise mixing: head h's weights act on its d / H channels. keys [B,S,d] -> [B,T,d]."""
  b, s, d = keys.shape
  nh = weights.shape[1]
  out = jnp.einsum('bhts,bshc->bthc', weights, keys.reshape(b, s, nh, d // nh))
  return out.reshape(b, weights.shape[2], d)


class Convolution(nn.Module):
  """The paper's convolution block; `kernel_fn` is the kind's kernel (attention.KINDS `conv`).

  decode=True (decoder only): the 'cache' collection keeps the last K - 1 GLU outputs of this
  layer with their positions and segments (segment 0 = empty slot).
  """

  cfg: object
  kernel_fn: object
  kernel_size: int
  causal: bool
  decode: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, seg, pos):
    cfg, dt, size = self.cfg, self.cfg.jdtype, self.kernel_size
    h = DenseGeneral((2, cfg.d_model), ('embed', None, 'mlp'), use_bias=True, dtype=dt, name='glu')
    h = h(x)
    h = h[..., 0, :] * jax.nn.sigmoid(h[..., 1, :])  # GLU
    h = constrain(h, ('batch', 'length', 'mlp'))
    logits = self.kernel_fn(self, h, size)
    kernel = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dt)
    kernel = Dropout(cfg.conv_weight_dropout, cfg.dropout_mask, name='dropconnect')(
      kernel, deterministic=self.deterministic
    )
    keys, k_seg, k_pos = h, seg, pos
    if self.decode:
      keys, k_seg, k_pos = self._window(h, seg, pos, size - 1)
    first, _ = offsets(size, self.causal)
    weights = band_weights(kernel, seg, pos, k_seg, k_pos, first)
    self.sow('intermediates', 'attention_weights', weights)
    out = mix(weights, keys)
    return DenseGeneral((cfg.d_model,), ('mlp', 'embed'), use_bias=True, dtype=dt, name='out')(out)

  def _window(self, h, seg, pos, n):
    """Keys of a cached step: the last n inputs (cache) + the new ones; keeps the last n."""
    b, _, d = h.shape
    cx = self.variable('cache', 'conv_x', jnp.zeros, (b, n, d), h.dtype)
    cp = self.variable('cache', 'conv_pos', jnp.zeros, (b, n), jnp.int32)
    cs = self.variable('cache', 'conv_seg', jnp.zeros, (b, n), jnp.int32)
    keys = jnp.concatenate([cx.value, h], axis=1)
    k_pos = jnp.concatenate([cp.value, pos], axis=1)
    k_seg = jnp.concatenate([cs.value, seg], axis=1)
    start = keys.shape[1] - n
    cx.value, cp.value, cs.value = keys[:, start:], k_pos[:, start:], k_seg[:, start:]
    return keys, k_seg, k_pos

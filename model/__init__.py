"""attnlab models: pure Flax Linen modules built from `config.model`.

`build_model(cfg)` validates the config and returns the module; `count_params(params)` counts
parameters; `flops_per_token(cfg, src_len, tgt_len)` gives analytic FLOPs for MFU.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from model.config import ModelConfig, make_config

__all__ = ['build_model', 'count_params', 'flops_per_token', 'ModelConfig', 'make_config']


def build_model(cfg: Any) -> nn.Module:
  """config.model (ConfigDict/dict/ModelConfig) -> module; ValueError names a bad key and the choices."""
  mc = make_config(cfg)
  if mc.arch == 'rnn':
    from model.rnn import RNNSeq2Seq
    return RNNSeq2Seq(mc)
  from model.transformer import DecoderOnly, EncoderDecoder
  return EncoderDecoder(mc) if mc.arch == 'encoder_decoder' else DecoderOnly(mc)


def count_params(params: Any) -> int:
  """Number of scalars in a (boxed or unboxed) parameter tree."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
  return int(sum(math.prod(x.shape) for x in leaves))


def _attention_flops(mc: ModelConfig, q_len: float, kv_len: float, proj_kv: bool) -> float:
  """Forward FLOPs (2 per multiply-add) of one attention block for q_len queries over kv_len keys."""
  d, h, k, hd = mc.d_model, mc.num_heads, mc.kv_heads, mc.hd
  f = 2 * q_len * d * h * hd * 2                 # query and output projections
  if proj_kv:
    f += 2 * kv_len * d * k * hd * (1 if mc.attention == 'shared_qk' else 2)
  if mc.attention == 'additive':
    f += q_len * kv_len * h * hd * 3             # add, tanh, dot with v
  f += 2 * q_len * kv_len * h * hd * 2           # scores and weighted sum of values
  return f


def _ffn_flops(mc: ModelConfig, n: float) -> float:
  return 2 * n * mc.d_model * mc.d_ff * (3 if mc.ffn == 'swiglu' else 2)


def flops_per_token(cfg: Any, src_len: int, tgt_len: int, training: bool = True) -> float:
  """Analytic matmul FLOPs per target token for one (source, target) pair of these lengths.

  Counts encoder (amortised over the target tokens), decoder self-attention (full T x T, as in
  the usual MFU convention), cross-attention (K/V projected once per source) and the output
  logits; training multiplies the forward pass by 3 (backward = 2x forward). Decoder-only models
  see one sequence of src_len + tgt_len tokens, all counted as targets. Norms, softmax and
  embedding lookups are ignored.
  """
  mc = make_config(cfg)
  s, t, d, v = float(src_len), float(tgt_len), mc.d_model, mc.vocab_size
  if mc.arch == 'rnn':
    hid, gates = mc.rnn_hidden, (3 if mc.rnn_cell == 'gru' else 4)
    enc = 2 * s * 2 * gates * (d + hid) * hid * 2             # two directions
    dec = 2 * t * gates * (d + 2 * hid + hid) * hid          # input = embedding + context
    att = 2 * t * s * hid * 2 + 2 * s * 2 * hid * hid + t * s * hid * 3 + 2 * t * 2 * hid * hid
    out = 2 * t * (hid + 2 * hid) * d + 2 * t * d * v
    total, tokens = enc + dec + att + out, t
  elif mc.arch == 'decoder_only':
    n = s + t
    layer = _attention_flops(mc, n, n, True) + _ffn_flops(mc, n)
    total, tokens = mc.dec_layers * layer + 2 * n * d * v, n
  else:
    enc = mc.enc_layers * (_attention_flops(mc, s, s, True) + _ffn_flops(mc, s))
    dec = mc.dec_layers * (_attention_flops(mc, t, t, True) + _attention_flops(mc, t, s, True)
                           + _ffn_flops(mc, t))
    total, tokens = enc + dec + 2 * t * d * v, t
  return (3.0 if training else 1.0) * total / tokens

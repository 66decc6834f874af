"""Wiring only: encoder and decoder stacks, the encoder-decoder and the decoder-only LM.

Every model exposes the same three entry points, which the trainer and `model.decoding` use:
- `__call__(batch, deterministic=True) -> logits [B,T,V]` (float32); with `return_hidden=True`
  and a tied output, `(final states [B,T,D], embedding table [V,D])` instead, for the trainer's
  fused output projection + loss (`train/loss.py`),
- `encode(batch, deterministic=True) -> encoder states` (None for decoder-only),
- `decode(tokens, positions, segments, encoded, src_segments, max_cache_len) -> logits [B,t,V]`:
  one cached step over t >= 1 new tokens; call with `mutable=['cache']`. The first call (no
  'cache' collection) creates the cache with room for `max_cache_len` tokens.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import positions as pos_lib
from model.dropout import Dropout
from model.attention import KINDS, Attention, exclude_self, fold_beams, make_mask
from model.convolution import Convolution
from model.layers import DenseGeneral, Embed, EmbedInput, FeedForward, LayerNorm, constrain


def segments_positions(batch: dict, ids_key: str, prefix: str):
  """Segment ids and positions from the batch, or derived (1 on non-pad tokens, 0..T-1)."""
  ids = jnp.asarray(batch[ids_key])
  seg = batch.get(f'{prefix}_segment')
  pos = batch.get(f'{prefix}_position')
  seg = (ids != 0).astype(jnp.int32) if seg is None else jnp.asarray(seg, jnp.int32)
  if pos is None:
    pos = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
  return ids, seg, jnp.asarray(pos, jnp.int32)


class _Sublayers(nn.Module):
  """Residual wrapper shared by both layer kinds: post-LN (paper) or pre-LN."""

  def residual(self, x, fn, name):
    cfg = self.cfg
    drop = Dropout(cfg.dropout, cfg.dropout_mask, name=f'{name}_dropout')
    if cfg.norm == 'pre':
      return x + drop(
        fn(LayerNorm(cfg.jdtype, name=f'{name}_norm')(x)), deterministic=self.deterministic
      )
    y = x + drop(fn(x), deterministic=self.deterministic)
    return LayerNorm(cfg.jdtype, name=f'{name}_norm')(y)

  def self_sublayer(self, x, position, seg, mask, bias, q_pos, k_pos, cache_index, causal, decode):
    """The residual self-attention sublayer, or the convolution block of a convolution kind."""
    cfg = self.cfg
    conv = KINDS[cfg.attention].conv
    if conv is not None:
      block = Convolution(
        cfg, conv, self.kernel_size, causal, decode, self.deterministic, name='conv'
      )
      return self.residual(x, lambda h: block(h, seg, q_pos), 'attn')
    attn = Attention(
      cfg, position, is_self=True, decode=decode, deterministic=self.deterministic, name='self_attn'
    )
    return self.residual(x, lambda h: attn(h, h, mask, bias, q_pos, k_pos, cache_index), 'attn')


class EncoderLayer(_Sublayers):
  cfg: object
  deterministic: bool = True
  kernel_size: int = 0  # convolution kinds only

  @nn.compact
  def __call__(self, x, mask, bias, pos, seg):
    cfg = self.cfg
    x = self.self_sublayer(x, cfg.enc_pos, seg, mask, bias, pos, pos, None, False, False)
    x = self.residual(x, FeedForward(cfg, self.deterministic, name='ffn'), 'ffn')
    return constrain(x, ('batch', 'length', 'embed')), None


class DecoderLayer(_Sublayers):
  cfg: object
  cross: bool = True
  decode: bool = False
  deterministic: bool = True
  kernel_size: int = 0  # convolution kinds only

  @nn.compact
  def __call__(self, x, encoded, self_mask, bias, q_pos, k_pos, cross_mask, cache_index, seg):
    cfg = self.cfg
    x = self.self_sublayer(
      x, cfg.dec_pos, seg, self_mask, bias, q_pos, k_pos, cache_index, True, self.decode
    )
    if self.cross:
      xattn = Attention(
        cfg,
        'none',
        is_self=False,
        decode=self.decode,
        deterministic=self.deterministic,
        name='cross_attn',
      )
      x = self.residual(x, lambda h: xattn(h, encoded, cross_mask), 'cross')
    x = self.residual(x, FeedForward(cfg, self.deterministic, name='ffn'), 'ffn')
    return constrain(x, ('batch', 'length', 'embed')), None


def run_layers(parent, layer_cls, n: int, x, args, **kwargs):
  """Apply n layers: a Python loop, or nn.scan (compile time flat in depth); optional nn.remat.

  Layer i gets `kernel_size=cfg.kernel_size(i)` (the convolution kinds' width; model/config.py
  refuses nn.scan when the widths differ)."""
  cfg = parent.cfg
  if cfg.remat != 'none':
    policy = None if cfg.remat == 'full' else jax.checkpoint_policies.checkpoint_dots
    layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    # cache leaves keep batch on axis 0 (layers on axis 1) so decoding can reorder beams uniformly.
    stack = nn.scan(
      layer_cls,
      variable_axes={'params': 0, 'cache': 1},
      split_rngs={'params': True, 'dropout': True},
      in_axes=(nn.broadcast,) * len(args),
      length=n,
      metadata_params={nn.PARTITION_NAME: 'layers'},
    )
    x, _ = stack(cfg, name='layers', kernel_size=cfg.kernel_size(0), **kwargs)(x, *args)
    return x
  for i in range(n):
    x, _ = layer_cls(cfg, name=f'layer_{i}', kernel_size=cfg.kernel_size(i), **kwargs)(x, *args)
  return x


def unstack_layers(tree):
  """Params of scanned layers in the layout of `run_layers`' Python loop: every `layers`
  subtree (leaves [n, ...]) becomes `layer_0` ... `layer_{n-1}` (slice i each). Same math; the
  model built with scan_layers=False (and no remat) takes them."""
  if not hasattr(tree, 'items'):
    return tree
  out = {}
  for name, sub in tree.items():
    if name == 'layers' and hasattr(sub, 'items'):
      n = jax.tree.leaves(sub)[0].shape[0]
      out.update({f'layer_{i}': jax.tree.map(lambda x, i=i: x[i], sub) for i in range(n)})
    else:
      out[name] = unstack_layers(sub)
  return out


def _position_bias(module, scheme: str, q_pos, k_pos, bidirectional: bool):
  s = pos_lib.SCHEMES[scheme]
  return None if s.bias is None else s.bias(module, q_pos, k_pos, module.cfg, bidirectional)


class Encoder(nn.Module):
  cfg: object
  embed: Embed

  @nn.compact
  def __call__(self, ids, seg, pos, deterministic=True):
    cfg = self.cfg
    x = EmbedInput(cfg, cfg.enc_pos, deterministic, name='embed_input')(self.embed, ids, pos)
    mask = make_mask(seg, seg)
    if KINDS[cfg.attention].shared_qk:
      mask = exclude_self(mask, pos, pos)
    bias = _position_bias(self, cfg.enc_pos, pos, pos, bidirectional=True)
    x = run_layers(
      self, EncoderLayer, cfg.enc_layers, x, (mask, bias, pos, seg), deterministic=deterministic
    )
    if cfg.norm == 'pre':
      x = LayerNorm(cfg.jdtype, name='final_norm')(x)
    return x


# Decode-cache leaves that are the same for every beam row (functions of the params alone, such
# as the output table's [D, V] copy): beam search never reorders them (model/decoding.py).
SHARED_PREFIX = 'shared_'


class Decoder(nn.Module):
  cfg: object
  embed: Embed
  cross: bool = True

  @nn.compact
  def __call__(
    self,
    ids,
    seg,
    pos,
    encoded=None,
    src_seg=None,
    deterministic=True,
    decode=False,
    max_cache_len=0,
    return_hidden=False,
  ):
    cfg = self.cfg
    x = EmbedInput(cfg, cfg.dec_pos, deterministic, name='embed_input')(self.embed, ids, pos)
    k_pos, k_seg, cache_index = pos, seg, None
    if decode:  # keys = every cached slot; empty slots have segment 0 and are masked out
      b, t = ids.shape
      check_length = pos_lib.SCHEMES[cfg.dec_pos].check_length
      if check_length is not None:
        check_length(max_cache_len, cfg, 'decoding up to', 'decode shorter outputs')
      index = self.variable('cache', 'index', lambda: jnp.zeros((), jnp.int32))
      cpos = self.variable('cache', 'positions', jnp.zeros, (b, max_cache_len), jnp.int32)
      cseg = self.variable('cache', 'segments', jnp.zeros, (b, max_cache_len), jnp.int32)
      cache_index = index.value
      cpos.value = jax.lax.dynamic_update_slice(cpos.value, pos, (0, cache_index))
      cseg.value = jax.lax.dynamic_update_slice(cseg.value, seg, (0, cache_index))
      index.value = cache_index + t
      k_pos, k_seg = cpos.value, cseg.value
    self_mask = make_mask(seg, k_seg, pos, k_pos, causal=True)
    if KINDS[cfg.attention].shared_qk:
      self_mask = exclude_self(self_mask, pos, k_pos)
    bias = _position_bias(self, cfg.dec_pos, pos, k_pos, bidirectional=False)
    cross_mask = None
    if self.cross:  # beam search may pass each sentence's source once for its r beams (below)
      cross_mask = make_mask(fold_beams(seg, encoded.shape[0]), src_seg)
    x = run_layers(
      self,
      DecoderLayer,
      cfg.dec_layers,
      x,
      (encoded, self_mask, bias, pos, k_pos, cross_mask, cache_index, seg),
      cross=self.cross,
      decode=decode,
      deterministic=deterministic,
    )
    if cfg.norm == 'pre':
      x = LayerNorm(cfg.jdtype, name='final_norm')(x)
    if return_hidden and cfg.tie_output:  # the trainer's fused output projection + loss
      return constrain(x, ('batch', 'length', 'embed')), self.embed.table
    if cfg.tie_output and decode:
      # The tied projection reads a [D, V] copy of the table, a cache leaf made with the cache
      # unless the caller seeds it (`decoding.generate` makes it once per params and keeps it):
      # XLA:CPU's GEMM takes its right operand as [K, N], and the [V, D] table fed it
      # transposed on every step. Beam-4, one sentence, size=small: 1.10x per call (two runs of
      # 40 pairs, docs/performance.md); 32 sentences: no change. Same values: the same dot.
      table_t = self.variable(
        'cache', SHARED_PREFIX + 'output_table', lambda: self.embed.table.T.astype(cfg.jdtype)
      )
      logits = jnp.einsum('bte,ev->btv', x.astype(cfg.jdtype), table_t.value)
    elif cfg.tie_output:
      logits = self.embed.attend(x)
    else:
      logits = DenseGeneral((cfg.vocab_size,), ('embed', 'vocab'), dtype=cfg.jdtype, name='logits')(
        x
      )
    return constrain(logits.astype(jnp.float32), ('batch', 'length', 'vocab'))


class EncoderDecoder(nn.Module):
  cfg: object

  # `decode` takes `encoded`/`src_segments` with one row per sentence when the tokens have beam
  # rows (r consecutive rows per sentence): model.decoding then never repeats the source, its
  # cross-attention K/V are projected and cached once per sentence and read once per step for all
  # r beams (a [r*T, S] score matrix per sentence and head instead of r [T, S] ones).
  beams_share_source = True

  def setup(self):
    cfg = self.cfg
    self.embed = Embed(cfg.vocab_size, cfg.d_model, cfg.jdtype)
    tgt = self.embed
    if not cfg.share_embeddings:
      self.target_embed = Embed(cfg.vocab_size, cfg.d_model, cfg.jdtype)
      tgt = self.target_embed
    self.encoder = Encoder(cfg, self.embed)
    self.decoder = Decoder(cfg, tgt, cross=True)

  def encode(self, batch, deterministic=True):
    ids, seg, pos = segments_positions(batch, 'inputs', 'inputs')
    return self.encoder(ids, seg, pos, deterministic)

  def __call__(self, batch, deterministic=True, return_hidden=False):
    encoded = self.encode(batch, deterministic)
    _, src_seg, _ = segments_positions(batch, 'inputs', 'inputs')
    ids, seg, pos = segments_positions(batch, 'decoder_inputs', 'targets')
    return self.decoder(ids, seg, pos, encoded, src_seg, deterministic, return_hidden=return_hidden)

  def decode(self, tokens, positions, segments, encoded, src_segments, max_cache_len):
    return self.decoder(
      tokens, segments, positions, encoded, src_segments, True, True, max_cache_len
    )


class DecoderOnly(nn.Module):
  cfg: object

  def setup(self):
    self.embed = Embed(self.cfg.vocab_size, self.cfg.d_model, self.cfg.jdtype)
    self.decoder = Decoder(self.cfg, self.embed, cross=False)

  def encode(self, batch, deterministic=True):
    del batch, deterministic
    return None

  def __call__(self, batch, deterministic=True, return_hidden=False):
    ids, seg, pos = segments_positions(batch, 'decoder_inputs', 'targets')
    return self.decoder(ids, seg, pos, None, None, deterministic, return_hidden=return_hidden)

  def decode(self, tokens, positions, segments, encoded, src_segments, max_cache_len):
    del encoded, src_segments
    return self.decoder(tokens, segments, positions, None, None, True, True, max_cache_len)

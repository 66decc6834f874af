"""Model configuration: `config.model` (an ml_collections ConfigDict) resolved into a frozen
dataclass.

Validation lives here so a bad combination fails at build time, before any parameter exists.
The choice lists of position schemes and attention kinds, and the (attention x position) refusal
table, are derived from the two registries: `positions.SCHEMES` and `attention.KINDS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from model import attention as attn_lib
from model import dropout as dropout_lib
from model import positions as pos_lib

ARCHS = ('encoder_decoder', 'decoder_only', 'rnn')
POSITIONS = pos_lib.NAMES
ATTENTIONS = tuple(attn_lib.KINDS)
FFNS = ('relu', 'gelu', 'swiglu')
NORMS = ('post', 'pre')
REMATS = ('none', 'full', 'dots')
DTYPES = ('float32', 'bfloat16')
RNN_CELLS = ('gru', 'lstm')
DROPOUT_MASKS = dropout_lib.MASKS
ATTENTION_IMPLS = attn_lib.IMPLS

# Position schemes each attention kind cannot take (see the table in attention.py).
UNSUPPORTED = {kind: attn_lib.unsupported(kind) for kind in ATTENTIONS}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every field of `config.model` (docs/contracts.md); None fields are resolved by properties."""

  arch: str = 'encoder_decoder'
  vocab_size: int = 0
  d_model: int = 256
  num_heads: int = 4
  num_kv_heads: int | None = None
  num_layers: int = 3
  num_encoder_layers: int | None = None
  num_decoder_layers: int | None = None
  d_ff: int = 1024
  head_dim: int | None = None
  dropout: float = 0.1
  attention_dropout: float = 0.0
  dropout_mask: str = 'bernoulli'
  position: str = 'sinusoidal'
  encoder_position: str | None = None
  decoder_position: str | None = None
  max_len: int = 256
  shaw_max_distance: int = 16
  t5_num_buckets: int = 32
  t5_max_distance: int = 128
  attention: str = 'dot'
  attention_impl: str = 'auto'
  # lightconv / dynamicconv: kernel width per layer (layer i takes entry i, the last repeats;
  # Wu et al. 2019 use 3, 7, 15, 31, 31, 31, 31) and DropConnect on the normalised kernel.
  conv_kernels: tuple[int, ...] = (3, 7, 15, 31, 31, 31, 31)
  conv_weight_dropout: float = 0.1
  ffn: str = 'relu'
  norm: str = 'post'
  share_embeddings: bool = True
  tie_output: bool = True
  scale_embeddings: bool = True
  scan_layers: bool = True
  remat: str = 'none'
  dtype: str = 'float32'
  rnn_cell: str = 'gru'
  rnn_hidden: int = 256
  embed_init: str | None = None  # used by the trainer (word2vec init), not by the modules

  @property
  def enc_layers(self) -> int:
    return self.num_layers if self.num_encoder_layers is None else self.num_encoder_layers

  @property
  def dec_layers(self) -> int:
    return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

  @property
  def kv_heads(self) -> int:
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  @property
  def hd(self) -> int:
    return self.d_model // self.num_heads if self.head_dim is None else self.head_dim

  @property
  def enc_pos(self) -> str:
    return self.position if self.encoder_position is None else self.encoder_position

  @property
  def dec_pos(self) -> str:
    return self.position if self.decoder_position is None else self.decoder_position

  def kernel_size(self, layer: int) -> int:
    """The convolution kinds' kernel width in `layer` (0-based) of either stack."""
    return self.conv_kernels[min(layer, len(self.conv_kernels) - 1)]

  @property
  def jdtype(self):
    return jnp.bfloat16 if self.dtype == 'bfloat16' else jnp.float32


def _choice(key: str, value: Any, choices: tuple) -> None:
  if value not in choices:
    raise ValueError(f'model.{key}={value!r} is not valid; choose one of {list(choices)}.')


def make_config(cfg: Any) -> ModelConfig:
  """ConfigDict / dict / ModelConfig -> validated ModelConfig (ValueError names the bad key)."""
  if isinstance(cfg, ModelConfig):
    mc = cfg
  else:
    d = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f'unknown model config key(s) {unknown}; valid keys are {sorted(known)}.')
    if isinstance(d.get('conv_kernels'), list):  # JSON round trip
      d['conv_kernels'] = tuple(d['conv_kernels'])
    mc = ModelConfig(**d)
  validate(mc)
  return mc


def validate(c: ModelConfig) -> None:
  """Raise ValueError for any unsupported value or combination."""
  _choice('arch', c.arch, ARCHS)
  _choice('attention', c.attention, ATTENTIONS)
  _choice('ffn', c.ffn, FFNS)
  _choice('norm', c.norm, NORMS)
  _choice('dropout_mask', c.dropout_mask, DROPOUT_MASKS)
  _choice('remat', c.remat, REMATS)
  _choice('dtype', c.dtype, DTYPES)
  _choice('rnn_cell', c.rnn_cell, RNN_CELLS)
  _choice('attention_impl', c.attention_impl, ATTENTION_IMPLS)
  for key in ('position', 'encoder_position', 'decoder_position'):
    if getattr(c, key) is not None:
      _choice(key, getattr(c, key), POSITIONS)
  if c.vocab_size <= 0:
    raise ValueError(
      'model.vocab_size must be > 0 (the trainer sets it from the tokenizer when 0).'
    )
  for key in ('d_model', 'num_heads', 'd_ff', 'num_layers', 'rnn_hidden'):
    if getattr(c, key) <= 0:
      raise ValueError(f'model.{key}={getattr(c, key)} must be > 0.')
  if c.arch == 'rnn':
    return  # the RNN ignores heads / positions / attention kind
  if c.head_dim is None and c.d_model % c.num_heads:
    raise ValueError(
      f'model.d_model={c.d_model} is not divisible by model.num_heads={c.num_heads}; '
      'change one or set model.head_dim.'
    )
  if c.kv_heads <= 0 or c.num_heads % c.kv_heads:
    raise ValueError(
      f'model.num_kv_heads={c.num_kv_heads} must divide model.num_heads={c.num_heads}.'
    )
  kind = attn_lib.KINDS[c.attention]
  if kind.shared_qk and c.kv_heads != c.num_heads:
    raise ValueError(
      f'model.attention={c.attention} uses one matrix for queries and keys, so '
      'model.num_kv_heads must be None or equal to model.num_heads.'
    )
  if kind.conv is not None:
    _validate_conv(c)
  used = [p for p in POSITIONS if p in (c.enc_pos, c.dec_pos)]
  for name in used:
    check = pos_lib.SCHEMES[name].check
    message = check(c) if check else None
    if message:
      raise ValueError(message)
  stacks = [('decoder_position', c.dec_pos)]
  if c.arch == 'encoder_decoder':
    stacks.append(('encoder_position', c.enc_pos))
  for key, pos in stacks:
    if pos in UNSUPPORTED[c.attention]:
      ok = [p for p in POSITIONS if p not in UNSUPPORTED[c.attention]]
      raise ValueError(
        f'model.{key}={pos!r} is not supported with model.attention={c.attention!r}; '
        f'choose one of {ok} (or another attention).'
      )
  if c.attention_impl == 'cudnn':
    _validate_cudnn(c, kind, used)


def _validate_cudnn(c: ModelConfig, kind, used: list[str]) -> None:
  """attention_impl=cudnn: every reason the fused kernel cannot run this model, in one error."""
  why = []
  if not kind.fused:
    why.append(f'model.attention={c.attention!r} (cuDNN computes softmax(q.k) only)')
  for name in used:
    if pos_lib.SCHEMES[name].relative is not None:
      why.append(f'position {name!r} (its relative terms enter the scores and the values)')
  if c.attention_dropout > 0:
    why.append(f'model.attention_dropout={c.attention_dropout} (not supported by the fused kernel)')
  if c.dtype != 'bfloat16':
    why.append(f"model.dtype={c.dtype!r} (cuDNN's fused attention needs 'bfloat16')")
  if why:
    raise ValueError(
      'model.attention_impl=cudnn cannot run this model: '
      + '; '.join(why)
      + '. Use model.attention_impl=auto (or xla / einsum).'
    )


def _validate_conv(c: ModelConfig) -> None:
  """lightconv / dynamicconv: kernel widths, DropConnect rate, heads, and nn.scan's one shape."""
  ks = c.conv_kernels
  if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
    raise ValueError(
      f'model.conv_kernels={ks!r} must be a non-empty list of kernel widths >= 1 '
      '(e.g. (3, 7, 15, 31)).'
    )
  if not 0.0 <= c.conv_weight_dropout < 1.0:
    raise ValueError(f'model.conv_weight_dropout={c.conv_weight_dropout} must be in [0, 1).')
  if c.d_model % c.num_heads:
    raise ValueError(
      f'model.attention={c.attention} splits model.d_model={c.d_model} channels into '
      f'model.num_heads={c.num_heads} groups: make d_model divisible by num_heads.'
    )
  if c.kv_heads != c.num_heads:
    raise ValueError(
      f'model.attention={c.attention} has no keys or values to group: model.num_kv_heads '
      'must be None or equal to model.num_heads (cross-attention keeps all heads).'
    )
  widths = {c.kernel_size(i) for i in range(max(c.enc_layers, c.dec_layers))}
  if c.scan_layers and len(widths) > 1:
    raise ValueError(
      f'model.conv_kernels gives the layers widths {sorted(widths)}, and model.scan_layers=True '
      'stacks identical layers: set --config.model.scan_layers=False, or give one width.'
    )

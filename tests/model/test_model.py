"""build_model validation, parameter metadata and counts, analytic FLOPs."""

import jax
import numpy as np
import pytest
from flax import linen as nn

import model
from train import metrics
from launch import count as count_lib

AXES = {'vocab', 'embed', 'heads', 'kv', 'mlp', 'layers', 'relpos', None}


@pytest.mark.parametrize(
  'override,match',
  [
    (
      dict(attention='flash'),
      r"model.attention='flash'.*\['dot', 'additive', 'shared_qk', 'linear', 'lightconv', 'dyn",
    ),
    (dict(position='xpos'), r"model.position='xpos'.*'alibi'"),
    (
      dict(attention='additive', position='rotary'),
      r"model.decoder_position='rotary'.*additive.*\['none'",
    ),
    (
      dict(attention='linear', encoder_position='t5', decoder_position='none'),
      r'model.encoder_position',
    ),
    (dict(num_kv_heads=3), r'model.num_kv_heads=3 must divide'),
    (dict(attention='shared_qk', num_kv_heads=1), r'shared_qk'),
    (dict(vocab_size=0), r'vocab_size'),
    (dict(ffn='geglu'), r"\['relu', 'gelu', 'swiglu'\]"),
    (dict(arch='moe'), r"'encoder_decoder', 'decoder_only', 'rnn'"),
    (dict(posiiton='t5'), r'unknown model config key.*posiiton'),
  ],
)
def test_invalid_config_names_key_and_choices(override, match):
  cfg = {**dict(vocab_size=10, d_model=8, num_heads=2), **override}
  with pytest.raises(ValueError, match=match):
    model.build_model(cfg)


@pytest.mark.parametrize(
  'cfg',
  [
    dict(
      arch='encoder_decoder',
      position='t5',
      scan_layers=True,
      ffn='swiglu',
      tie_output=False,
      share_embeddings=False,
    ),
    dict(arch='decoder_only', position='shaw', remat='dots', scan_layers=True),
    dict(arch='encoder_decoder', position='learned', attention='additive', num_kv_heads=1),
    dict(arch='rnn', rnn_cell='lstm', tie_output=False),
  ],
)
def test_every_parameter_has_logical_axis_names(cfg):
  cfg = dict(vocab_size=10, d_model=8, num_heads=2, num_layers=2, d_ff=8, rnn_hidden=6, **cfg)
  m = model.build_model(cfg)
  batch = {k: np.ones((1, 3), np.int32) for k in ('inputs', 'decoder_inputs')}
  params = jax.eval_shape(m.init, jax.random.key(0), batch)['params']
  leaves = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= AXES, leaf.names
  if cfg.get('scan_layers'):
    stack = params['encoder' if 'encoder' in params else 'decoder']['layers']
    layer_leaves = jax.tree_util.tree_leaves(stack, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(l.names[0] == 'layers' and l.value.shape[0] == 2 for l in layer_leaves)


def test_base_config_parameter_count(capsys):
  n = count_lib.param_count(count_lib.BASE)
  with capsys.disabled():
    print(f'\nbase Transformer (37000 shared vocab, tied): {n:,} parameters')
  # Paper: ~65M with its own bias/vocabulary details; ours has no attention biases.
  assert 60_000_000 <= n <= 65_000_000
  emb = 37000 * 512
  enc = 6 * (4 * 512 * 512 + 2 * 512 * 2048 + 2048 + 512 + 2 * 2 * 512)
  dec = 6 * (8 * 512 * 512 + 2 * 512 * 2048 + 2048 + 512 + 3 * 2 * 512)
  assert n == emb + enc + dec


FLOP_CFG = dict(
  arch='decoder_only',
  vocab_size=50,
  d_model=16,
  num_heads=4,
  num_layers=3,
  d_ff=32,
  tie_output=False,
  position='none',
)


def _kernels(cfg):
  """{param path: shape} of every parameter whose path names a kernel."""
  m = model.build_model(cfg)
  params = jax.eval_shape(m.init, jax.random.key(0), {'decoder_inputs': np.ones((1, 4), np.int32)})
  flat = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(params['params']))
  return {jax.tree_util.keystr(p): l.shape for p, l in flat if 'kernel' in jax.tree_util.keystr(p)}


def test_flops_per_token_matches_parameter_count():
  """Decoder-only forward: 2 FLOPs per kernel weight per token + attention's 4*n*d per layer."""
  cfg = FLOP_CFG
  n_kernel = sum(int(np.prod(s)) for s in _kernels(cfg).values())  # layers + untied logits
  src, tgt = 5, 7
  want = 2 * n_kernel + 3 * 2 * 2 * (src + tgt) * 16
  assert metrics.flops_per_token(cfg, src, tgt, training=False) == pytest.approx(want)
  assert metrics.flops_per_token(cfg, src, tgt) == pytest.approx(3 * want)


@pytest.mark.parametrize('kind', ['lightconv', 'dynamicconv'])
def test_conv_flops_per_token_match_their_weights(kind):
  """Convolution blocks: 2 FLOPs per matmul weight per token (GLU, output, dynamic kernel
  predictor, FFN, logits) plus the depthwise convolution's 2 * K * d per layer."""
  widths = (3, 5, 5)
  cfg = dict(FLOP_CFG, attention=kind, scan_layers=False, conv_kernels=widths[:2])
  # every kernel is a matmul's except lightconv's taps, the conv block's own 'kernel' [H, K]
  matmul = [s for p, s in _kernels(cfg).items() if not p.endswith("['conv']['kernel']")]
  n_matmul = sum(int(np.prod(s)) for s in matmul)
  want = 2 * n_matmul + sum(2 * k * 16 for k in widths)
  assert metrics.flops_per_token(cfg, 5, 7, training=False) == pytest.approx(want)

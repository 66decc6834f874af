"""Tests for launch/plots.py, plots_draw.py and plots_data.py: every figure is a real PNG of
FIGSIZE * DPI pixels."""

import numpy as np
import pytest
from PIL import Image

from launch import plots, plots_data, plots_draw
from model import transformer

EXPECTED = (
  int(plots_draw.FIGSIZE[0] * plots_draw.DPI),
  int(plots_draw.FIGSIZE[1] * plots_draw.DPI),
)


def _check_png(path):
  assert plots_draw.read_png_size(path) == EXPECTED
  with Image.open(path) as im:
    assert im.size == EXPECTED
    pixels = np.asarray(im.convert('L'), np.float32)
  # Non-empty: a drawn figure has many distinct grey levels, a blank canvas has one.
  assert len(np.unique(pixels)) > 20
  assert pixels.std() > 5


def test_heatmaps_and_curves(tmp_path):
  rng = np.random.default_rng(0)
  _check_png(
    plots_draw.plot_heatmaps(
      str(tmp_path / 'h.png'),
      rng.normal(size=(5, 6, 7)),
      [f'm{i}' for i in range(5)],
      suptitle='t',
      xlabel='x',
      ylabel='y',
      colorbar_label='c',
    )
  )
  x = np.arange(-10, 11)
  _check_png(
    plots_draw.plot_curves(
      str(tmp_path / 'c.png'),
      x,
      {'a': np.cos(x), 'b': np.sin(x)},
      title='t',
      xlabel='x',
      ylabel='y',
    )
  )


def test_cross_attention_and_bias_figures(tmp_path):
  rng = np.random.default_rng(1)
  w = rng.random((2, 4, 6, 5))
  w /= w.sum(-1, keepdims=True)
  _check_png(
    plots_draw.plot_cross_attention(
      str(tmp_path / 'x.png'), w, list('abcde'), ['Ein', 'Hund', 'läuft', '.', '</s>', 'pad'], 's'
    )
  )
  _check_png(
    plots_draw.plot_bias_per_head(str(tmp_path / 'b.png'), rng.normal(size=(8, 16, 16)), 'ALiBi')
  )
  _check_png(plots_draw.plot_sinusoid_table(str(tmp_path / 's.png'), rng.normal(size=(50, 32))))


def test_bad_shapes_are_rejected(tmp_path):
  with pytest.raises(ValueError, match='layers, heads, target, source'):
    plots_draw.plot_cross_attention(str(tmp_path / 'x.png'), np.zeros((3, 4)), ['a'], ['b'], 't')
  with pytest.raises(ValueError, match='non-empty'):
    plots_draw.plot_heatmaps(
      str(tmp_path / 'x.png'),
      np.zeros((0, 2, 2)),
      [],
      suptitle='',
      xlabel='',
      ylabel='',
      colorbar_label='',
    )
  (tmp_path / 'n.png').write_text('not a png')
  with pytest.raises(ValueError, match='not a PNG'):
    plots_draw.read_png_size(str(tmp_path / 'n.png'))


def test_rotary_similarity_matches_closed_form():
  head_dim, max_d = 16, 40
  distances, curves = plots_data.rotary_similarity(head_dim, max_d, draws=8)
  assert list(distances) == list(range(-max_d, max_d + 1))
  for curve in curves.values():
    assert curve[max_d] == pytest.approx(1.0)
    np.testing.assert_allclose(curve, curve[::-1], atol=1e-4)  # q = k: symmetric in distance
  # q = k = ones: each pair (1, 1) rotated by d*theta_i has dot product 2 cos(d*theta_i).
  theta = 10000.0 ** (-np.arange(0, head_dim, 2) / head_dim)
  expected = np.cos(distances[:, None] * theta[None]).sum(1) / (head_dim // 2)
  np.testing.assert_allclose(curves['q = k = ones'], expected, atol=1e-4)


def test_alibi_and_t5_bias_match_formulas():
  from model import positions

  bias = plots_data.alibi_bias_hqk(4, 10)
  slopes = np.asarray(positions.alibi_slopes(4))
  i = np.arange(10)
  np.testing.assert_allclose(
    bias, -slopes[:, None, None] * np.abs(i[None, :] - i[:, None]), rtol=1e-6
  )
  table = np.arange(32 * 3, dtype=np.float32).reshape(32, 3)
  t5 = plots_data.t5_bias_hqk(table, 12, bidirectional=True)
  assert t5.shape == (3, 12, 12)
  # Distances below 8 (half of the 16 buckets per direction) have their own bucket.
  assert t5[0, 5, 5] == table[0, 0] and t5[1, 5, 7] == table[16 + 2, 1]
  assert t5[2, 7, 5] == table[2, 2]
  causal = plots_data.t5_bias_hqk(table, 12, bidirectional=False)
  assert np.isnan(causal[0, 3, 4]) and causal[0, 4, 3] == table[1, 0]


def test_position_figures(tmp_path):
  import ml_collections

  cfg = ml_collections.ConfigDict(
    dict(d_model=32, num_heads=4, head_dim=None, t5_num_buckets=32, t5_max_distance=128)
  )
  params = {'encoder': {'t5_table': np.ones((32, 4))}, 'decoder': {'t5_table': np.zeros((32, 4))}}
  paths = plots.position_figures(str(tmp_path), cfg, params, length=16)
  names = sorted(p.rsplit('/', 1)[-1] for p in paths)
  assert names == [
    'alibi_bias.png',
    'rotary_similarity.png',
    'sinusoid_table.png',
    't5_bias-1.png',
    't5_bias.png',
  ]
  for p in paths:
    if 't5' not in p:  # the constant test tables draw flat panels; check the others fully
      _check_png(p)
    else:
      assert plots_draw.read_png_size(p) == EXPECTED


@pytest.mark.parametrize(
  'attention,scan',
  [
    ('dot', True),
    ('additive', False),
    pytest.param('shared_qk', False, marks=pytest.mark.slow),
    pytest.param('linear', True, marks=pytest.mark.slow),
  ],
)
def test_cross_attention_weights_reproduce_the_model_output(attention, scan):
  """Weights rebuilt by plots, applied to the model's own values and output projection, give
  exactly the cross-attention block output the model computed."""
  import jax
  import model
  from model import attention as attn
  from eval_helpers import CharTokenizer, random_params, tiny_model_cfg
  from train import decode_text

  cfg = tiny_model_cfg(
    attention=attention,
    scan_layers=scan,
    num_kv_heads=2 if attention in ('dot', 'linear') else None,
  )
  (batch,) = decode_text.text_batches(
    CharTokenizer(),
    ['hello there', 'a b'],
    ['hallo', 'xy z'],
    arch='encoder_decoder',
    batch_size=3,
    max_src_len=32,
    max_tgt_len=32,
  )
  module = model.build_model(cfg)
  fwd = {k: v for k, v in batch.items() if k != 'index'}
  params = random_params(module, fwd)
  w = plots_data.cross_attention_weights(cfg, params, batch)  # [B, L, H, T, S]
  assert w.shape[:3] == (3, 2, 4)
  real_t = batch['targets_segment'] > 0
  np.testing.assert_allclose(w.sum(-1).transpose(0, 3, 1, 2)[real_t], 1.0, rtol=1e-5)
  assert np.all(w.transpose(0, 3, 1, 2, 4)[~real_t] == 0)
  assert np.all(w * (batch['inputs_segment'][:, None, None, None, :] == 0) == 0)  # pad keys

  flat = dict(cfg, scan_layers=False)
  p = transformer.unstack_layers(params) if scan else params
  pick = lambda m, name: (
    name == '__call__'
    and len(m.path) >= 2
    and m.path[-2] == 'cross_attn'
    and m.path[-1] in ('value', 'out')
  )
  apply = lambda p, b: model.build_model(flat).apply(
    {'params': p}, b, capture_intermediates=pick, mutable=['intermediates']
  )[1]
  state = jax.jit(apply)(p, fwd)
  for i in range(2):
    cap = state['intermediates']['decoder'][f'layer_{i}']['cross_attn']
    (v,), (out,) = cap['value']['__call__'], cap['out']['__call__']
    kernel = p['decoder'][f'layer_{i}']['cross_attn']['out']['kernel']  # [H, D, d_model]
    mine = np.einsum('bthd,hde->bte', attn.combine(w[:, i], v), kernel)
    np.testing.assert_allclose(mine[real_t], np.asarray(out)[real_t], atol=2e-5, rtol=1e-4)

"""Pictures of a trained model: cross-attention heatmaps and the position schemes.

  python -m launch.plots --workdir=DIR [--checkpoint=latest|best|STEP|avg_last:N] [--split=val]
      [--num_sentences=3]

writes PNGs to `DIR/plots/` (or `--out`): `cross_attention-{i}.png` per sentence (one panel
per layer, heads averaged, plus one per head of the last layer), `sinusoid_table.png`,
`rotary_similarity.png`, `alibi_bias.png`, and `t5_bias.png` (the checkpoint's learned buckets
when it uses T5 positions, else freshly initialised ones, labelled as such).
Every figure is FIGSIZE inches at DPI dots per inch, so FIGSIZE * DPI pixels.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import types
from typing import Sequence

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

import model
from model import positions
from train import data, decode_text, restore
from train.layout import write_atomic

FIGSIZE = (12.0, 8.0)  # inches
DPI = 100  # so every PNG is 1200 x 800 pixels


# ---------------------------------------------------------------------------------------------
# Drawing primitives (arrays in, PNG out)
# ---------------------------------------------------------------------------------------------
def _figure() -> Figure:
  # A bare Figure (no pyplot): no global state, no GUI backend, safe in threads and tests.
  return Figure(figsize=FIGSIZE, dpi=DPI, layout='constrained')


def save_png(fig: Figure, path: str) -> str:
  """Render `fig` to PNG at exactly FIGSIZE * DPI pixels and write it atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=DPI)  # no bbox_inches="tight": it would change the size
  write_atomic(path, buf.getvalue())
  return path


def _grid(n: int) -> tuple[int, int]:
  """(rows, cols) filling the landscape canvas with n panels."""
  cols = min(n, math.ceil(math.sqrt(n * FIGSIZE[0] / FIGSIZE[1])))
  return math.ceil(n / cols), cols


def _ticks(ax, labels: Sequence[str] | None, axis: str, max_labels: int = 40) -> None:
  if labels is None or len(labels) > max_labels:
    return  # too many to read: leave matplotlib's numeric ticks
  if axis == 'x':
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
  else:
    ax.set_yticks(range(len(labels)), labels, fontsize=7)


def plot_heatmaps(
  path: str,
  maps: np.ndarray,
  titles: Sequence[str],
  *,
  suptitle: str,
  xlabel: str,
  ylabel: str,
  colorbar_label: str,
  xticklabels: Sequence[str] | None = None,
  yticklabels: Sequence[str] | None = None,
  cmap: str = 'viridis',
  symmetric: bool = False,
) -> str:
  """One heatmap per `maps[i]` ([N, rows, cols]) on a shared colour scale (centred on 0 when
  `symmetric`, for signed values)."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 3 or not maps.size:
    raise ValueError(f'plot_heatmaps needs a non-empty [N, rows, cols] array, got {maps.shape}')
  fig = _figure()
  rows, cols = _grid(len(maps))
  vmin, vmax = float(np.nanmin(maps)), float(np.nanmax(maps))
  if symmetric:
    vmax = max(abs(vmin), abs(vmax))
    vmin = -vmax
  axes = fig.subplots(rows, cols, squeeze=False)
  image = None
  for i, ax in enumerate(axes.flat):
    if i >= len(maps):
      ax.set_visible(False)
      continue
    image = ax.imshow(
      maps[i], aspect='auto', cmap=cmap, vmin=vmin, vmax=vmax, interpolation='nearest'
    )
    ax.set_title(titles[i], fontsize=9)
    _ticks(ax, xticklabels, 'x')
    _ticks(ax, yticklabels, 'y')
    if i // cols == rows - 1 or i + cols >= len(maps):
      ax.set_xlabel(xlabel, fontsize=8)
    if i % cols == 0:
      ax.set_ylabel(ylabel, fontsize=8)
  fig.colorbar(image, ax=axes.ravel().tolist(), label=colorbar_label, shrink=0.9)
  fig.suptitle(suptitle)
  return save_png(fig, path)


def plot_curves(
  path: str, x: np.ndarray, curves: dict[str, np.ndarray], *, title: str, xlabel: str, ylabel: str
) -> str:
  """Line plot of several named curves over a shared x axis."""
  if not curves:
    raise ValueError('plot_curves needs at least one curve')
  fig = _figure()
  ax = fig.subplots()
  for label, y in curves.items():
    ax.plot(x, np.asarray(y, np.float32), label=label, linewidth=1.2)
  ax.axhline(0.0, color='grey', linewidth=0.5)
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_png(fig, path)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_sinusoid_table(path: str, table: np.ndarray) -> str:
  """The [positions, d_model] sinusoidal embedding table as an image."""
  table = np.asarray(table, np.float32)
  return plot_heatmaps(
    path,
    table.T[None],
    [f'{table.shape[0]} positions x {table.shape[1]} dimensions'],
    suptitle='Sinusoidal position encoding (Vaswani et al. 2017)',
    xlabel='position',
    ylabel='embedding dimension',
    colorbar_label='value',
    cmap='RdBu_r',
    symmetric=True,
  )


def plot_rotary_similarity(
  path: str, distances: np.ndarray, curves: dict[str, np.ndarray], head_dim: int
) -> str:
  """q.k after rotary rotation as a function of the query-key distance."""
  return plot_curves(
    path,
    distances,
    curves,
    xlabel='relative distance (key position - query position)',
    ylabel='q . k after rotation (normalised to 1 at distance 0)',
    title=f'Rotary position embedding: similarity of a query and a key vs distance '
    f'(head_dim={head_dim})',
  )


def plot_bias_per_head(path: str, bias_hqk: np.ndarray, scheme: str, note: str = '') -> str:
  """Additive attention-logit bias, [heads, query position, key position], one panel a head."""
  bias_hqk = np.asarray(bias_hqk, np.float32)
  titles = [f'head {h}' for h in range(len(bias_hqk))]
  return plot_heatmaps(
    path,
    bias_hqk,
    titles,
    suptitle=f'{scheme} attention bias per head{note}',
    xlabel='key position',
    ylabel='query position',
    colorbar_label='bias added to logits',
    cmap='magma',
  )


def plot_cross_attention(
  path: str,
  weights_lhts: np.ndarray,
  src_tokens: Sequence[str],
  tgt_tokens: Sequence[str],
  title: str,
) -> str:
  """Cross-attention weights [layers, heads, target, source]: per-layer head averages, and
  every head of the last layer."""
  w = np.asarray(weights_lhts, np.float32)
  if w.ndim != 4:
    raise ValueError(
      f'cross-attention weights must be [layers, heads, target, source], got shape {w.shape}'
    )
  w = w[:, :, : len(tgt_tokens), : len(src_tokens)]
  layers, heads = w.shape[:2]
  maps = list(w.mean(axis=1)) + (list(w[-1]) if heads > 1 else [])
  titles = [f'layer {l} (mean of {heads} heads)' for l in range(layers)]
  titles += [f'layer {layers - 1}, head {h}' for h in range(heads if heads > 1 else 0)]
  return plot_heatmaps(
    path,
    np.stack(maps),
    titles,
    suptitle=title,
    xlabel='source token',
    ylabel='target token',
    colorbar_label='attention weight',
    xticklabels=src_tokens,
    yticklabels=tgt_tokens,
    cmap='viridis',
  )


def read_png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG header; raises ValueError if `path` is not a PNG."""
  with open(path, 'rb') as f:
    head = f.read(24)
  if head[:8] != b'\x89PNG\r\n\x1a\n':
    raise ValueError(f'{path}: not a PNG file')
  return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')


# ---------------------------------------------------------------------------------------------
# Position schemes: the arrays come from model/positions.py, so the pictures show what runs
# ---------------------------------------------------------------------------------------------
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


def position_figures(out_dir: str, model_cfg, params=None, length: int = 48) -> list[str]:
  """Sinusoid table, rotary similarity, ALiBi and T5 bias per head, for `model_cfg`'s sizes.

  T5 uses the learned tables found in `params` (one figure per stack); without any, a table
  drawn like the model's initialiser, labelled as untrained.
  """
  d_model, heads = int(model_cfg.d_model), int(model_cfg.num_heads)
  head_dim = int(model_cfg.get('head_dim') or d_model // heads)
  table = jax.jit(positions.sinusoid_table, static_argnums=1)(jnp.arange(4 * length), d_model)
  paths = [plot_sinusoid_table(os.path.join(out_dir, 'sinusoid_table.png'), np.asarray(table))]
  distances, curves = rotary_similarity(head_dim, 4 * length)
  paths.append(
    plot_rotary_similarity(
      os.path.join(out_dir, 'rotary_similarity.png'), distances, curves, head_dim
    )
  )
  paths.append(
    plot_bias_per_head(
      os.path.join(out_dir, 'alibi_bias.png'),
      alibi_bias_hqk(heads, length),
      'ALiBi',
      ' (slopes 2^(-8h/H); bidirectional, -slope * |i - j|)',
    )
  )
  max_distance = int(model_cfg.get('t5_max_distance') or 128)
  tables = find_param(params, 't5_table') if params is not None else []
  if not tables:
    rng = np.random.default_rng(0)
    tables = [
      (
        'untrained (random init)',
        rng.standard_normal((int(model_cfg.get('t5_num_buckets') or 32), heads)),
      )
    ]
  for i, (path, table) in enumerate(tables):
    bidirectional = 'decoder' not in path.lower()
    name = 't5_bias.png' if i == 0 else f't5_bias-{i}.png'
    paths.append(
      plot_bias_per_head(
        os.path.join(out_dir, name),
        t5_bias_hqk(table, length, bidirectional, max_distance),
        'T5',
        f' ({path}; {"bidirectional" if bidirectional else "causal"})',
      )
    )
  return paths


# ---------------------------------------------------------------------------------------------
# Cross-attention weights of a trained encoder-decoder
# ---------------------------------------------------------------------------------------------
def unscan_params(tree):
  """Scanned layers `{'layers': leaves [n, ...]}` -> `{'layer_0': ..., 'layer_1': ...}`, the
  layout of the same model with `scan_layers=False` (same math, per-layer module paths)."""
  if not hasattr(tree, 'items'):
    return tree
  out = {}
  for key, value in tree.items():
    if key == 'layers' and hasattr(value, 'items'):
      n = jax.tree.leaves(value)[0].shape[0]
      for i in range(n):
        out[f'layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], value)
    else:
      out[key] = unscan_params(value)
  return out


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
  params = unscan_params(params) if mc.scan_layers else params
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


def _pieces(tokenizer, ids, side: str) -> list[str]:
  names = {0: '<pad>', 1: '</s>', 2: '<s>', 3: '<unk>'}
  return [names.get(int(t)) or tokenizer.decode([int(t)], side=side) or '_' for t in ids]


def cross_attention_figures(
  out_dir: str, loaded, params, sources: Sequence[str], decode: str = 'greedy'
) -> list[str]:
  """Translate `sources`, then plot the cross-attention over each (source, own translation)."""
  config, tok = loaded.config, loaded.tokenizer
  settings = decode_text.settings_from_config(config, decode=decode)
  kwargs = dict(
    arch='encoder_decoder',
    batch_size=len(sources),
    max_src_len=config.data.max_src_len,
    max_tgt_len=config.data.max_tgt_len,
  )
  hyps = decode_text.translate_batches(
    loaded.module, params, decode_text.text_batches(tok, sources, None, **kwargs), tok, settings
  )
  hyps = [hyps[i] for i in range(len(sources))]
  (batch,) = decode_text.text_batches(tok, sources, hyps, **kwargs)
  weights = cross_attention_weights(config.model, params, batch)
  paths = []
  for row, i in enumerate(batch['index']):
    if i < 0:
      continue
    src_n, tgt_n = int(batch['inputs_segment'][row].sum()), int(batch['targets_segment'][row].sum())
    title = f'Cross-attention, sentence {i}: {sources[i][:60]!r} -> {hyps[i][:60]!r}'
    paths.append(
      plot_cross_attention(
        os.path.join(out_dir, f'cross_attention-{i}.png'),
        weights[row],
        _pieces(tok, batch['inputs'][row, :src_n], 'source'),
        _pieces(tok, batch['targets'][row, :tgt_n], 'target'),
        title,
      )
    )
  return sorted(paths)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def make_plots(
  workdir: str,
  checkpoint: str = 'latest',
  *,
  split: str | None = None,
  num_sentences: int = 3,
  out_dir: str | None = None,
) -> list[str]:
  """Every figure for one checkpoint of `workdir`; returns the PNG paths."""
  loaded = restore.load_workdir(workdir)
  ckpt, params = restore.load_checkpoint(
    workdir, checkpoint if checkpoint != 'all' else 'latest', loaded.config
  )
  out_dir = out_dir or os.path.join(workdir, 'plots')
  paths = position_figures(out_dir, loaded.config.model, params)
  if loaded.config.model.get('arch', 'encoder_decoder') == 'encoder_decoder' and num_sentences:
    split = split or list(loaded.config.data.get('eval_splits') or ['val'])[0]
    sources = [e['source'] for e in data.load_examples(loaded.config, split)[:num_sentences]]
    paths += cross_attention_figures(out_dir, loaded, params, sources)
  return paths


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string('workdir', None, 'Training workdir.', required=True)
  flags.DEFINE_string('checkpoint', 'latest', 'latest | best | STEP | avg_last:N.')
  flags.DEFINE_string('split', None, 'Split whose first sentences get attention heatmaps.')
  flags.DEFINE_integer('num_sentences', 3, 'Sentences to draw cross-attention for.')
  flags.DEFINE_string('out', None, 'Output folder (default WORKDIR/plots).')


def main(argv):
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  from train import runtime  # pylint: disable=import-outside-toplevel

  runtime.setup_runtime()
  f = flags.FLAGS
  for path in make_plots(
    f.workdir, f.checkpoint, split=f.split, num_sentences=f.num_sentences, out_dir=f.out
  ):
    print(path)


if __name__ == '__main__':
  from train import cli  # pylint: disable=import-outside-toplevel

  cli.run(main, define_flags=_define_flags)

"""The drawing of launch.plots, arrays in and PNG out: heatmap grids and line plots, and the
named figures built on them. Every figure is FIGSIZE inches at DPI dots per inch, so
FIGSIZE * DPI pixels.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

from matplotlib.figure import Figure
import numpy as np

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

"""Pictures of a trained model: cross-attention heatmaps and the position schemes.

  python -m launch.plots --workdir=DIR [--checkpoint=latest] [--split=val] [--num_sentences=3]

writes PNGs to `DIR/plots/` (or `--out`): `cross_attention-{i}.png` per sentence (one panel
per layer, heads averaged, plus one per head of the last layer), `sinusoid_table.png`,
`rotary_similarity.png`, `alibi_bias.png`, and `t5_bias.png` (the checkpoint's learned buckets
when it uses T5 positions, else freshly initialised ones, labelled as such).
Every figure is FIGSIZE inches at DPI dots per inch, so FIGSIZE * DPI pixels.
"""
from __future__ import annotations

import io
import math
import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

FIGSIZE = (12.0, 8.0)  # inches
DPI = 100              # so every PNG is 1200 x 800 pixels


# ---------------------------------------------------------------------------------------------
# Drawing primitives (arrays in, PNG out)
# ---------------------------------------------------------------------------------------------
def _figure() -> Figure:
  # A bare Figure (no pyplot): no global state, no GUI backend, safe in threads and tests.
  return Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")


def save_png(fig: Figure, path: str) -> str:
  """Render `fig` to PNG at exactly FIGSIZE * DPI pixels and write it atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)  # no bbox_inches="tight": it would change the size
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)
  return path


def _grid(n: int) -> tuple[int, int]:
  """(rows, cols) filling the landscape canvas with n panels."""
  cols = min(n, math.ceil(math.sqrt(n * FIGSIZE[0] / FIGSIZE[1])))
  return math.ceil(n / cols), cols


def _ticks(ax, labels: Sequence[str] | None, axis: str, max_labels: int = 40) -> None:
  if labels is None or len(labels) > max_labels:
    return  # too many to read: leave matplotlib's numeric ticks
  if axis == "x":
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
  else:
    ax.set_yticks(range(len(labels)), labels, fontsize=7)


def plot_heatmaps(path: str, maps: np.ndarray, titles: Sequence[str], *, suptitle: str,
                  xlabel: str, ylabel: str, colorbar_label: str,
                  xticklabels: Sequence[str] | None = None,
                  yticklabels: Sequence[str] | None = None, cmap: str = "viridis",
                  symmetric: bool = False) -> str:
  """One heatmap per `maps[i]` ([N, rows, cols]) on a shared colour scale (centred on 0 when
  `symmetric`, for signed values)."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 3 or not maps.size:
    raise ValueError(f"plot_heatmaps needs a non-empty [N, rows, cols] array, got {maps.shape}")
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
    image = ax.imshow(maps[i], aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_title(titles[i], fontsize=9)
    _ticks(ax, xticklabels, "x")
    _ticks(ax, yticklabels, "y")
    if i // cols == rows - 1 or i + cols >= len(maps):
      ax.set_xlabel(xlabel, fontsize=8)
    if i % cols == 0:
      ax.set_ylabel(ylabel, fontsize=8)
  fig.colorbar(image, ax=axes.ravel().tolist(), label=colorbar_label, shrink=0.9)
  fig.suptitle(suptitle)
  return save_png(fig, path)


def plot_curves(path: str, x: np.ndarray, curves: dict[str, np.ndarray], *, title: str,
                xlabel: str, ylabel: str) -> str:
  """Line plot of several named curves over a shared x axis."""
  if not curves:
    raise ValueError("plot_curves needs at least one curve")
  fig = _figure()
  ax = fig.subplots()
  for label, y in curves.items():
    ax.plot(x, np.asarray(y, np.float32), label=label, linewidth=1.2)
  ax.axhline(0.0, color="grey", linewidth=0.5)
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
      path, table.T[None], [f"{table.shape[0]} positions x {table.shape[1]} dimensions"],
      suptitle="Sinusoidal position encoding (Vaswani et al. 2017)", xlabel="position",
      ylabel="embedding dimension", colorbar_label="value", cmap="RdBu_r", symmetric=True)


def plot_rotary_similarity(path: str, distances: np.ndarray,
                           curves: dict[str, np.ndarray], head_dim: int) -> str:
  """q.k after rotary rotation as a function of the query-key distance."""
  return plot_curves(
      path, distances, curves, xlabel="relative distance (key position - query position)",
      ylabel="q . k after rotation (normalised to 1 at distance 0)",
      title=f"Rotary position embedding: similarity of a query and a key vs distance "
            f"(head_dim={head_dim})")


def plot_bias_per_head(path: str, bias_hqk: np.ndarray, scheme: str, note: str = "") -> str:
  """Additive attention-logit bias, [heads, query position, key position], one panel a head."""
  bias_hqk = np.asarray(bias_hqk, np.float32)
  titles = [f"head {h}" for h in range(len(bias_hqk))]
  return plot_heatmaps(
      path, bias_hqk, titles, suptitle=f"{scheme} attention bias per head{note}",
      xlabel="key position", ylabel="query position", colorbar_label="bias added to logits",
      cmap="magma")


def plot_cross_attention(path: str, weights_lhts: np.ndarray, src_tokens: Sequence[str],
                         tgt_tokens: Sequence[str], title: str) -> str:
  """Cross-attention weights [layers, heads, target, source]: per-layer head averages, and
  every head of the last layer."""
  w = np.asarray(weights_lhts, np.float32)
  if w.ndim != 4:
    raise ValueError(f"cross-attention weights must be [layers, heads, target, source], "
                     f"got shape {w.shape}")
  w = w[:, :, :len(tgt_tokens), :len(src_tokens)]
  layers, heads = w.shape[:2]
  maps = list(w.mean(axis=1)) + (list(w[-1]) if heads > 1 else [])
  titles = [f"layer {l} (mean of {heads} heads)" for l in range(layers)]
  titles += [f"layer {layers - 1}, head {h}" for h in range(heads if heads > 1 else 0)]
  return plot_heatmaps(
      path, np.stack(maps), titles, suptitle=title, xlabel="source token",
      ylabel="target token", colorbar_label="attention weight", xticklabels=src_tokens,
      yticklabels=tgt_tokens, cmap="viridis")


def read_png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG header; raises ValueError if `path` is not a PNG."""
  with open(path, "rb") as f:
    head = f.read(24)
  if head[:8] != b"\x89PNG\r\n\x1a\n":
    raise ValueError(f"{path}: not a PNG file")
  return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")



# ---------------------------------------------------------------------------------------------
# Position schemes: the arrays come from model/positions.py, so the pictures show what runs
# ---------------------------------------------------------------------------------------------
def rotary_similarity(head_dim: int, max_distance: int, seed: int = 0, draws: int = 256
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """q.k after rotary rotation against key - query distance, normalised to 1 at distance 0.

  Two curves: q = k = all-ones (RoFormer's long-term decay picture) and q = k drawn from a
  standard normal, averaged over `draws` vectors.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from model import positions  # pylint: disable=import-outside-toplevel
  distances = np.arange(-max_distance, max_distance + 1)
  query_pos = max_distance  # any position: rotary scores depend on the distance only
  vecs = {"q = k = ones": np.ones((1, head_dim), np.float32),
          f"q = k ~ N(0, I), mean of {draws}":
              np.random.default_rng(seed).standard_normal((draws, head_dim)).astype(np.float32)}
  curves = {}
  for label, v in vecs.items():
    n = len(v)
    q_pos = jnp.full((n, 1), query_pos, jnp.int32)
    k_pos = jnp.broadcast_to(jnp.asarray(query_pos + distances, jnp.int32), (n, len(distances)))
    q = positions.apply_rotary(jnp.asarray(v)[:, None, None, :], q_pos)[:, 0, 0]      # [n, D]
    k = positions.apply_rotary(
        jnp.broadcast_to(jnp.asarray(v)[:, None, None, :], (n, len(distances), 1, head_dim)),
        k_pos)[:, :, 0]                                                                 # [n, K, D]
    sim = np.asarray(jnp.einsum("nd,nkd->nk", q, k)).mean(axis=0)
    curves[label] = sim / sim[max_distance]
  return distances, curves


def alibi_bias_hqk(num_heads: int, length: int, bidirectional: bool = True) -> np.ndarray:
  """ALiBi bias [heads, query, key] for positions 0..length-1 (causal: future keys = -inf)."""
  import types  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from model import positions  # pylint: disable=import-outside-toplevel
  pos = jnp.arange(length, dtype=jnp.int32)[None]
  bias = np.asarray(positions.alibi_bias(None, pos, pos, types.SimpleNamespace(
      num_heads=num_heads), bidirectional))[0]
  if not bidirectional:
    bias = np.where(np.tril(np.ones((length, length), bool)), bias, np.nan)
  return bias


def t5_bias_hqk(table: np.ndarray, length: int, bidirectional: bool,
                max_distance: int = 128) -> np.ndarray:
  """T5 bias [heads, query, key] from a [num_buckets, heads] table (learned or initial)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from model import positions  # pylint: disable=import-outside-toplevel
  table = np.asarray(table, np.float32)
  pos = jnp.arange(length, dtype=jnp.int32)
  bucket = np.asarray(positions.t5_bucket(pos[None, :] - pos[:, None], bidirectional,
                                          table.shape[0], max_distance))       # [Tq, Tk]
  bias = np.transpose(table[bucket], (2, 0, 1))
  if not bidirectional:  # keys after the query are masked anyway; blank them in the picture
    bias = np.where(np.tril(np.ones((length, length), bool))[None], bias, np.nan)
  return bias


def find_param(params, name: str) -> list[tuple[str, np.ndarray]]:
  """Every (path, array) leaf of a parameter tree whose last key is `name`."""
  found = []

  def walk(node, path):
    if isinstance(node, dict) or hasattr(node, "items"):
      for k, v in node.items():
        walk(v, f"{path}/{k}" if path else str(k))
    elif path.rsplit("/", 1)[-1] == name:
      found.append((path, np.asarray(getattr(node, "value", node))))

  walk(params, "")
  return found


def position_figures(out_dir: str, model_cfg, params=None, length: int = 48) -> list[str]:
  """Sinusoid table, rotary similarity, ALiBi and T5 bias per head, for `model_cfg`'s sizes.

  T5 uses the learned tables found in `params` (one figure per stack); without any, a table
  drawn like the model's initialiser, labelled as untrained.
  """
  from model import positions  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  d_model, heads = int(model_cfg.d_model), int(model_cfg.num_heads)
  head_dim = int(model_cfg.get("head_dim") or d_model // heads)
  paths = [plot_sinusoid_table(os.path.join(out_dir, "sinusoid_table.png"), np.asarray(
      positions.sinusoid_table(jnp.arange(4 * length), d_model)))]
  distances, curves = rotary_similarity(head_dim, 4 * length)
  paths.append(plot_rotary_similarity(os.path.join(out_dir, "rotary_similarity.png"),
                                      distances, curves, head_dim))
  paths.append(plot_bias_per_head(os.path.join(out_dir, "alibi_bias.png"),
                                  alibi_bias_hqk(heads, length), "ALiBi",
                                  " (slopes 2^(-8h/H); bidirectional, -slope * |i - j|)"))
  max_distance = int(model_cfg.get("t5_max_distance") or 128)
  tables = find_param(params, "t5_table") if params is not None else []
  if not tables:
    rng = np.random.default_rng(0)
    tables = [("untrained (random init)", rng.standard_normal(
        (int(model_cfg.get("t5_num_buckets") or 32), heads)))]
  for i, (path, table) in enumerate(tables):
    bidirectional = "decoder" not in path.lower()
    name = "t5_bias.png" if i == 0 else f"t5_bias-{i}.png"
    paths.append(plot_bias_per_head(
        os.path.join(out_dir, name), t5_bias_hqk(table, length, bidirectional, max_distance),
        "T5", f" ({path}; {'bidirectional' if bidirectional else 'causal'})"))
  return paths

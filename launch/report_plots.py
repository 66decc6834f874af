"""The figures of launch.report: bar charts and line charts, each a grid of panels.

Arrays in, PNG out: launch.report decides what goes in each panel (facets, means over seeds);
this module only draws. Same style as launch/plots_draw.py: a bare matplotlib `Figure` (no pyplot,
so no global state and no GUI backend), written with the repo's atomic writer.
"""

from __future__ import annotations

import io
from typing import Sequence

from matplotlib.figure import Figure

from train.layout import write_atomic

PANEL_SIZE = (4.6, 3.4)  # inches per panel
MAX_COLUMNS = 4
DPI = 100

# [(panel title, [(legend or tick label, ...data)])]; an empty title gets the chart's default.
Bars = Sequence[tuple[str, Sequence[tuple[str, float, float]]]]  # label, mean, std
Lines = Sequence[tuple[str, Sequence[tuple[str, Sequence[float], Sequence[float]]]]]  # label, x, y


def panel_figure(n_panels: int) -> tuple[Figure, list]:
  """A Figure with n_panels axes, at most MAX_COLUMNS per row; spare grid cells are hidden."""
  cols = min(MAX_COLUMNS, n_panels)
  rows = -(-n_panels // cols)
  fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat[n_panels:]:
    ax.set_visible(False)
  return fig, list(axes.flat[:n_panels])


def save_png(fig: Figure, path: str) -> str:
  """Lays out `fig` tightly, renders it to PNG and writes it atomically."""
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=DPI)
  write_atomic(path, buf.getvalue())
  return path


def bar_chart(path: str, panels: Bars, *, ylabel: str, title: str) -> str:
  """One bar per item, error bars = its std."""
  fig, axes = panel_figure(len(panels))
  for ax, (panel_title, items) in zip(axes, panels):
    labels = [label for label, _, _ in items]
    ax.bar(
      range(len(items)),
      [m for _, m, _ in items],
      yerr=[s for _, _, s in items],
      capsize=3,
      color='tab:blue',
      alpha=0.8,
    )
    ax.set_xticks(range(len(items)), labels, rotation=40, ha='right', fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(panel_title or title, fontsize=9)
  return save_png(fig, path)


def line_chart(
  path: str,
  panels: Lines,
  *,
  xlabel: str,
  ylabel: str,
  title: str,
  ylim: tuple[float, float] | None = None,
  vline: float | None = None,
  **line_style,
) -> str:
  """One line per item; `vline` draws a dashed gray marker at that x in every panel."""
  fig, axes = panel_figure(len(panels))
  for ax, (panel_title, items) in zip(axes, panels):
    for label, x, y in items:
      ax.plot(x, y, label=label, **line_style)
    if vline is not None:
      ax.axvline(vline, color='gray', ls='--', lw=0.8)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if ylim is not None:
      ax.set_ylim(*ylim)
    ax.set_title(panel_title or title, fontsize=9)
    ax.legend(fontsize=7)
  return save_png(fig, path)

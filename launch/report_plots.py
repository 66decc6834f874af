"""The figures of launch.report: bar charts and line charts, each a grid of panels.

Arrays in, PNG out: launch.report decides what goes in each panel (facets, means over seeds);
this module only draws, in launch/plots_draw.py's style and with its writer: a bare matplotlib
`Figure` (no pyplot, so no global state and no GUI backend), constrained layout, DPI, `save_png`.
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from launch.plots_draw import DPI, save_png

PANEL_SIZE = (4.6, 3.4)  # inches per panel
MAX_COLUMNS = 4

# [(panel title, [(legend or tick label, ...data)])]; an empty title gets the chart's default.
Bars = Sequence[tuple[str, Sequence[tuple[str, float, float]]]]  # label, mean, std
Lines = Sequence[tuple[str, Sequence[tuple[str, Sequence[float], Sequence[float]]]]]  # label, x, y


def panel_figure(n_panels: int) -> tuple[Figure, list]:
  """A Figure with n_panels axes, at most MAX_COLUMNS per row; spare grid cells are hidden."""
  cols = min(MAX_COLUMNS, n_panels)
  rows = -(-n_panels // cols)
  fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), dpi=DPI, layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat[n_panels:]:
    ax.set_visible(False)
  return fig, list(axes.flat[:n_panels])


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

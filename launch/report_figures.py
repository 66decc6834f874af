"""What each figure of a sweep report shows: panels and lines from the grouped settings
(`facets`), then bars of a metric, learning curves and exact match against length; the drawing
itself is launch/report_plots.py.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from launch import report_data
from launch import report_plots


def _short(key: str) -> str:
  return key.split('.')[-1]


def facets(groups: Sequence[dict]) -> list[tuple[str, list[tuple[str, dict]]]]:
  """[(panel title, [(legend label, group)])]: split many settings into panels (see module doc)."""
  varying = report_data.varying_keys(groups)
  distinct = {k: len({repr(g['setting'].get(k)) for g in groups}) for k in varying}
  label = lambda g, ks: ', '.join(f'{_short(k)}={g["setting"].get(k)}' for k in ks) or g['label']
  if len(groups) <= 8 or len(varying) < 2:
    return [('', [(label(g, varying), g) for g in groups])]
  line_key = max(varying, key=lambda k: distinct[k])
  panel_keys = [k for k in varying if k != line_key]
  panels: dict[str, list] = {}
  for g in groups:
    panels.setdefault(label(g, panel_keys), []).append((label(g, [line_key]), g))
  return list(panels.items())


def _safe(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'x'


def bar_plot(path: str, panels, split: str, metric: str) -> None:
  """Bars: the metric per setting, error bars = std over runs."""
  bars = []
  for title, items in panels:
    cells = []
    for label, g in items:
      values = [
        float(r['results'][split][metric])
        for r in g['runs']
        if split in r['results'] and metric in r['results'][split]
      ]
      if values:
        cells.append((label, *report_data.mean_std(values)))
    bars.append((title, cells))
  report_plots.bar_chart(path, bars, ylabel=metric, title=f'{metric} on {split}')


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float]]:
  """Mean over runs at the steps every run logged (the longest run alone if they share none)."""
  common = set.intersection(*(set(s for s, _ in c) for c in curves))
  if not common:
    longest = max(curves, key=len)
    return [s for s, _ in longest], [v for _, v in longest]
  steps = sorted(common)
  maps = [dict(c) for c in curves]
  return steps, [float(np.mean([m[s] for m in maps])) for s in steps]


def curve_plot(path: str, panels, tag: str, scalars: dict[str, dict]) -> bool:
  """Learning curves of `tag`, one line per setting (mean over runs); False if none has it."""
  lines = []
  for title, items in panels:
    curves = [
      (label, [scalars[r['name']][tag] for r in g['runs'] if scalars[r['name']].get(tag)])
      for label, g in items
    ]
    lines.append((title, [(label, *_mean_curve(c)) for label, c in curves if c]))
  if not any(items for _, items in lines):
    return False
  report_plots.line_chart(path, lines, xlabel='step', ylabel=tag, title=tag, lw=1.2)
  return True


def length_plot(path: str, panels, split: str, kind: str, train_max_len: int | None) -> None:
  """Exact-match accuracy against length, one line per setting (mean over runs)."""
  lines = []
  for title, items in panels:
    cells = []
    for label, g in items:
      tables = [
        report_data.by_length(r['results'][split], kind) for r in g['runs'] if split in r['results']
      ]
      tables = [t for t in tables if t]
      if tables:
        lengths = sorted(set.intersection(*(set(t) for t in tables)))
        cells.append((label, lengths, [np.mean([t[n] for t in tables]) for n in lengths]))
    lines.append((title, cells))
  xlabel = (
    'task length' + (f' (training: 1..{train_max_len})' if train_max_len else '')
    if kind == 'length'
    else 'target length (tokens)'
  )
  vline = train_max_len if train_max_len and kind == 'length' else None  # longest trained on
  report_plots.line_chart(
    path,
    lines,
    xlabel=xlabel,
    ylabel='exact match',
    title=split,
    ylim=(-0.02, 1.02),
    vline=vline,
    marker='.',
  )

r"""Gathers a sweep's results into a table and plots.

  python -m launch.report ROOT [--metric=bleu] [--seed_keys=seed]

Reads every run under ROOT (the workdirs launch.sweep made: `sweep_run.json` says the run's
overrides, `DONE.json` which `eval/{split}-{step}.json` to use; a workdir without them counts
with its newest results file per split). Runs that differ only in a seed key are one *setting*.
Writes, each file atomically:
- ROOT/report.md and ROOT/report.csv: per setting and split, the number of runs, mean ± sample
  standard deviation of every metric (bleu, bleu_lit, chrf, exact match / accuracy, loss) and the
  evaluated (best) checkpoint step;
- ROOT/plots/{metric}-{split}.png: the metric per setting, error bars = std over seeds;
- ROOT/plots/curves-{tag}.png: learning curves from each run's TensorBoard events (mean over seeds);
- ROOT/plots/length-{split}.png and target_length-{split}.png (lengthgen): exact-match accuracy
  against the task length and the target length in tokens.
plots/ belongs to the report: PNGs there that this report did not draw are removed.
With many settings and several swept keys, plots get one panel per value of the other keys and
one bar/line per value of the key with the most values (e.g. panels task × arch, lines = position).
This module writes the tables; launch/report_data.py collects the runs and their statistics,
launch/report_figures.py decides what each figure shows and launch/report_plots.py draws it.
Results files are found through train/layout.py, event files are read with TensorBoard's loader
(no TensorFlow).
"""

from __future__ import annotations

import argparse
import collections
import csv
import glob
import io
import os
import sys
from typing import Sequence

import numpy as np

from launch import report_data
from launch import report_figures
from launch import sweep_plan as sweep_lib
from train import cli
from train import layout


# ---------------------------------------------------------------------------- tables
def table_rows(groups: Sequence[dict]) -> tuple[list[dict], list[str]]:
  """One row per (setting, split): n_runs, {metric: (mean, std)}, best steps; and the metrics
  seen."""
  rows, seen = [], []
  splits = []
  for g in groups:
    for r in g['runs']:
      splits += [s for s in r['results'] if s not in splits]
  for split in splits:
    for g in groups:
      results = [r['results'][split] for r in g['runs'] if split in r['results']]
      if not results:
        continue
      stats = {}
      for metric in report_data.METRICS:
        values = [
          float(res[metric]) for res in results if isinstance(res.get(metric), (int, float))
        ]
        if values:
          stats[metric] = report_data.mean_std(values)
          seen += [metric] if metric not in seen else []
      steps = [int(res['step']) for res in results if 'step' in res]
      rows.append(
        {
          'setting': g['label'],
          'overrides': g['setting'],
          'split': split,
          'n_runs': len(results),
          'stats': stats,
          'steps': steps,
        }
      )
  return rows, [m for m in report_data.METRICS if m in seen]


def _fmt(metric: str, mean: float, std: float, n: int) -> str:
  digits = 2 if metric in ('bleu', 'bleu_lit', 'chrf') else 3
  return f'{mean:.{digits}f}' + (f' ± {std:.{digits}f}' if n > 1 else '')


def csv_text(rows: Sequence[dict], metrics: Sequence[str]) -> str:
  keys = []
  for row in rows:
    keys += [k for k in row['overrides'] if k not in keys]
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(
    [
      'setting',
      'split',
      *keys,
      'n_runs',
      *[f'{m}_{s}' for m in metrics for s in ('mean', 'std')],
      'best_step',
      'steps',
    ]
  )
  for row in rows:
    stats = [x for m in metrics for x in (row['stats'].get(m, ('', '')))]
    median = int(np.median(row['steps'])) if row['steps'] else ''
    writer.writerow(
      [
        row['setting'],
        row['split'],
        *[row['overrides'].get(k, '') for k in keys],
        row['n_runs'],
        *stats,
        median,
        ' '.join(map(str, row['steps'])),
      ]
    )
  return out.getvalue()


def markdown_text(
  root: str,
  runs: Sequence[dict],
  rows: Sequence[dict],
  metrics: Sequence[str],
  plots: dict[str, list[str]],
  common: dict | None = None,
) -> str:
  n_settings = len({r['setting'] for r in rows})
  lines = [
    f'# Sweep report: {os.path.basename(os.path.abspath(root))}',
    '',
    f'{len(runs)} runs ({sum(r["done"] for r in runs)} finished) in {n_settings} settings. '
    'Cells: mean ± sample std over runs (seeds); '
    'step: the evaluated checkpoint (median over runs).',
  ]
  if common:
    lines += [
      '',
      'Every run: ' + ', '.join(f'`{k}={sweep_lib.format_value(v)}`' for k, v in common.items()),
    ]
  for split in dict.fromkeys(r['split'] for r in rows):
    lines += [
      '',
      f'## {split}',
      '',
      '| setting | runs | ' + ' | '.join(metrics) + ' | step |',
      '|---|---:|' + '---:|' * len(metrics) + '---:|',
    ]
    for row in (r for r in rows if r['split'] == split):
      cells = [
        _fmt(m, *row['stats'][m], row['n_runs']) if m in row['stats'] else '' for m in metrics
      ]
      step = str(int(np.median(row['steps']))) if row['steps'] else ''
      lines.append(f'| {row["setting"]} | {row["n_runs"]} | ' + ' | '.join(cells) + f' | {step} |')
    lines += [''] + [f'![{os.path.basename(p)}]({p})' for p in plots.get(split, [])]
  for title, key in (('Accuracy by target length', 'length'), ('Learning curves', 'curves')):
    if plots.get(key):
      lines += ['', f'## {title}', ''] + [f'![{os.path.basename(p)}]({p})' for p in plots[key]]
  missing = [r for r in runs if not r['results']]
  if missing:
    lines += ['', '## Runs without results', '']
    lines += [
      f'- {r["name"]}: {"finished" if r["done"] else "not finished"}; log: '
      f'{os.path.join(r["name"], layout.LOG_FILE)}'
      for r in missing
    ]
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------- main
def make_report(
  root: str, *, metric: str | None = None, seed_keys: Sequence[str] = ('seed',)
) -> dict:
  """Writes report.md, report.csv and plots/ under root; returns their paths."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{root}: no such directory (pass the --root of launch.sweep)')
  runs = report_data.collect_runs(root)
  with_results = [r for r in runs if r['results']]
  if not with_results:
    raise ValueError(
      f'{root}: no run has results yet (eval/SPLIT-STEP.json); run launch.sweep first'
    )
  metric = metric or report_data.primary_metric(with_results)
  max_len = report_data._train_max_len(with_results)
  for run in with_results:
    run['results'] = {
      s: report_data.add_length_split(res, max_len) for s, res in run['results'].items()
    }
  groups = report_data.group_settings(with_results, seed_keys)
  rows, metrics = table_rows(groups)
  if metric not in metrics:
    raise cli.UsageError(f'--metric={metric!r}: the results carry {metrics}')
  plot_dir = os.path.join(root, 'plots')
  os.makedirs(plot_dir, exist_ok=True)
  panels = report_figures.facets(groups)
  plots: dict[str, list[str]] = collections.defaultdict(list)
  for split in dict.fromkeys(r['split'] for r in rows):
    name = f'{metric}-{report_figures._safe(split)}.png'
    report_figures.bar_plot(os.path.join(plot_dir, name), panels, split, metric)
    plots[split].append(f'plots/{name}')
    for kind in report_data._BY_LENGTH:
      if any(report_data.by_length(r['results'].get(split, {}), kind) for r in with_results):
        name = f'{kind}-{report_figures._safe(split)}.png'
        report_figures.length_plot(os.path.join(plot_dir, name), panels, split, kind, max_len)
        plots['length'].append(f'plots/{name}')
  scalars = {
    r['name']: report_data.read_scalars(os.path.join(r['workdir'], layout.TB_DIR))
    for r in with_results
  }
  for tag in report_data.curve_tags(scalars, metric):
    name = f'curves-{report_figures._safe(tag)}.png'
    if report_figures.curve_plot(os.path.join(plot_dir, name), panels, tag, scalars):
      plots['curves'].append(f'plots/{name}')
  written = {os.path.basename(p) for ps in plots.values() for p in ps}
  for stale in glob.glob(os.path.join(plot_dir, '*.png')):  # from an earlier report of this root
    if os.path.basename(stale) not in written:
      os.remove(stale)
  md, csv_path = os.path.join(root, 'report.md'), os.path.join(root, 'report.csv')
  layout.write_text(csv_path, csv_text(rows, metrics))
  layout.write_text(
    md, markdown_text(root, runs, rows, metrics, plots, report_data.common_overrides(groups))
  )
  return {
    'markdown': md,
    'csv': csv_path,
    'plots': [os.path.join(root, p) for ps in plots.values() for p in ps],
  }


class _OneLineParser(argparse.ArgumentParser):
  """argparse with train/cli.py's convention: one `error:` line and exit 2 for a bad command
  line (argparse prints a usage block)."""

  def error(self, message):
    cli.fail(f'{message} (--help lists the arguments)', cli.USAGE_EXIT)


def main(argv: Sequence[str]) -> int:
  parser = _OneLineParser(prog='python -m launch.report', description=__doc__.split('\n')[0])
  parser.add_argument('root', help='the --root directory of launch.sweep')
  parser.add_argument(
    '--metric',
    default=None,
    help='metric for the bar charts (default: exact_match, '
    'accuracy or bleu, whichever the results carry)',
  )
  parser.add_argument(
    '--seed_keys', default='seed', help='comma-separated override keys that are seeds'
  )
  args = parser.parse_args(argv)
  try:
    out = make_report(args.root, metric=args.metric, seed_keys=tuple(args.seed_keys.split(',')))
  except cli.UsageError as e:  # a --metric the results do not carry
    print(f'error: {cli.one_line(e)}', file=sys.stderr)
    return cli.USAGE_EXIT
  except (OSError, ValueError) as e:  # no such root, no results yet, an unreadable results file
    print(f'error: {cli.one_line(e)}', file=sys.stderr)
    return cli.RUNTIME_EXIT
  print(f'wrote {out["markdown"]}, {out["csv"]} and {len(out["plots"])} plots')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

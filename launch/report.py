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
This module decides what each figure shows; launch/report_plots.py draws it. Results files are
found through train/layout.py, event files are read with TensorBoard's loader (no TensorFlow).
"""

from __future__ import annotations

import collections
import csv
import glob
import io
import json
import math
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from launch import report_plots
from launch import sweep_plan as sweep_lib
from train import layout

METRICS = (
  'bleu',
  'bleu_lit',
  'chrf',
  'exact_match',
  'exact_match_seen',
  'exact_match_longer',
  'accuracy',
  'loss',
)
# bleu_lit: the literature's BLEU (lowercased, Moses-tokenized; train/scoring.py) beside bleu
# (sacreBLEU: cased, 13a, detokenized).
# exact_match_seen / _longer: lengthgen exact match over examples of task length <= / > the
# training config's data.train_max_len (count-weighted), i.e. in-distribution vs extrapolation.
# Results keys per x axis: the task's length (train.data.lengthgen; what train_max_len bounds) and
# the target's length in tokens (differs for addition and duplicate).
_BY_LENGTH = {
  'length': ('exact_match_by_length', 'accuracy_by_length'),
  'target_length': ('exact_match_by_target_length', 'accuracy_by_target_length'),
}
_CURVE_TAG = re.compile(r'loss|bleu|chrf|accuracy|exact', re.I)
_MAX_CURVE_TAGS = 4


# ---------------------------------------------------------------------------- TensorBoard events
def read_scalars(tb_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)] sorted by step} from every event file under tb_dir.

  Read with TensorBoard's own loader (no TensorFlow needed): simple_value and tensor scalars
  alike, a torn last record (a writer killed mid-write) ends that file's events. Events in a
  subdirectory get it as tag prefix (tb/eval/loss -> 'eval/loss'). A step written twice (a
  resumed run repeats steps after its last checkpoint) keeps the later file's value.
  """
  from tensorboard.backend.event_processing import plugin_event_accumulator as tb_events
  from tensorboard.util import tensor_util

  series: dict[str, dict[int, float]] = collections.defaultdict(dict)
  files = sorted(
    glob.glob(os.path.join(tb_dir, '**', '*tfevents*'), recursive=True),
    key=lambda p: (os.path.dirname(p), os.path.basename(p)),
  )
  for path in files:
    prefix = os.path.relpath(os.path.dirname(path), tb_dir)
    prefix = '' if prefix == '.' else prefix.replace(os.sep, '/') + '/'
    # One accumulator per file keeps the file order; keep every event, drop none on restarts.
    events = tb_events.EventAccumulator(
      path, size_guidance={tb_events.TENSORS: 0}, purge_orphaned_data=False
    )
    events.Reload()
    for tag in events.Tags()[tb_events.TENSORS]:
      if events.SummaryMetadata(tag).plugin_data.plugin_name != 'scalars':
        continue  # histograms, text, images
      for event in events.Tensors(tag):
        value = tensor_util.make_ndarray(event.tensor_proto)
        x = float(value.flat[0]) if value.size else math.nan
        if math.isfinite(x):
          series[prefix + tag][int(event.step)] = x
  return {tag: sorted(points.items()) for tag, points in series.items()}


# ---------------------------------------------------------------------------- collecting runs
def _load_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(
      f'{path}:{e.lineno}: not valid JSON ({e.msg}); delete or fix the file'
    ) from None


def _newest_results(workdir: str) -> dict[str, str]:
  """Without DONE.json: per split, the newest single-checkpoint results (averages are skipped)."""
  return layout.latest_results(workdir, averaged=False)


def collect_runs(root: str) -> list[dict]:
  """One dict per workdir under root: name, index, overrides, done, results {split: json}, workdir."""
  runs = []
  for workdir in sorted(glob.glob(os.path.join(root, '*', ''))):
    workdir = workdir.rstrip(os.sep)
    spec_path = os.path.join(workdir, layout.SPEC_FILE)
    done_path = os.path.join(workdir, layout.DONE_FILE)
    has_eval = os.path.isdir(layout.eval_dir(workdir))
    if not (os.path.exists(spec_path) or has_eval):
      continue  # not a run (plots/, logs, ...)
    spec = _load_json(spec_path) if os.path.exists(spec_path) else {}
    done = _load_json(done_path) if os.path.exists(done_path) else None
    files = done['results'] if done else _newest_results(workdir)
    results = {
      split: _load_json(os.path.join(workdir, rel))
      for split, rel in files.items()
      if os.path.exists(os.path.join(workdir, rel))
    }
    order = {s: i for i, s in enumerate(spec.get('eval_splits', []))}
    results = dict(sorted(results.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    runs.append(
      {
        'name': os.path.basename(workdir),
        'workdir': workdir,
        'index': spec.get('index', 10**9),
        'overrides': spec.get('overrides', {}),
        'done': done is not None,
        'results': results,
      }
    )
  runs.sort(key=lambda r: (r['index'], r['name']))
  return runs


def setting_of(overrides: dict, seed_keys: Sequence[str]) -> dict:
  return {
    k: v for k, v in overrides.items() if k not in seed_keys and k.split('.')[-1] not in seed_keys
  }


def group_settings(runs: Sequence[dict], seed_keys: Sequence[str]) -> list[dict]:
  """[{'label', 'setting', 'runs'}] in sweep order; a run without a spec is its own setting."""
  groups: dict[str, dict] = {}
  for run in runs:
    setting = setting_of(run['overrides'], seed_keys) if run['overrides'] else None
    if setting is None:
      key = run['name']
    else:
      key = (
        ', '.join(f'{k}={sweep_lib.format_value(v)}' for k, v in sorted(setting.items()))
        or 'default'
      )
    groups.setdefault(key, {'key': key, 'setting': setting or {}, 'runs': []})['runs'].append(run)
  out = list(groups.values())
  varying = varying_keys(out)
  for g in out:  # keys every setting shares (e.g. a smoke sweep's tiny sizes) stay out of labels
    g['label'] = (
      ', '.join(
        f'{k}={sweep_lib.format_value(g["setting"][k])}' for k in varying if k in g['setting']
      )
      or g['key']
    )
  return out


def varying_keys(groups: Sequence[dict]) -> list[str]:
  """Override keys whose value differs between settings, in first-seen order."""
  keys = []
  for g in groups:
    keys += [k for k in g['setting'] if k not in keys]
  return [k for k in keys if len({repr(g['setting'].get(k, '<unset>')) for g in groups}) > 1]


def common_overrides(groups: Sequence[dict]) -> dict:
  varying = set(varying_keys(groups))
  return {k: v for k, v in groups[0]['setting'].items() if k not in varying} if groups else {}


# ---------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single run)."""
  arr = np.asarray(values, np.float64)
  return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def primary_metric(runs: Sequence[dict]) -> str:
  present = {k for r in runs for res in r['results'].values() for k in res}
  for metric in ('exact_match', 'accuracy', 'bleu', 'loss'):
    if metric in present:
      return metric
  raise ValueError('no results carry bleu, exact_match, accuracy or loss')


def by_length(result: dict, kind: str = 'length') -> dict[int, float]:
  """{length: accuracy} from either results layout ({len: acc} or {len: {'accuracy': acc}})."""
  for key in _BY_LENGTH[kind]:
    if key in result:
      return {
        int(k): float(v['accuracy'] if isinstance(v, dict) else v) for k, v in result[key].items()
      }
  return {}


def add_length_split(result: dict, train_max_len: int | None) -> dict:
  """`result` plus exact_match_seen / exact_match_longer (count-weighted over task lengths
  <= / > train_max_len) when it has per-length counts; unchanged otherwise."""
  per_length = result.get('exact_match_by_length')
  if not train_max_len or not isinstance(per_length, dict):
    return result
  out = dict(result)
  for name, keep in (
    ('exact_match_seen', lambda n: n <= train_max_len),
    ('exact_match_longer', lambda n: n > train_max_len),
  ):
    cells = [
      v for k, v in per_length.items() if keep(int(k)) and isinstance(v, dict) and v.get('count')
    ]
    total = sum(int(v['count']) for v in cells)
    if total:
      out[name] = sum(float(v['accuracy']) * int(v['count']) for v in cells) / total
  return out


def table_rows(groups: Sequence[dict]) -> tuple[list[dict], list[str]]:
  """One row per (setting, split): n_runs, {metric: (mean, std)}, best steps; and the metrics seen."""
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
      for metric in METRICS:
        values = [
          float(res[metric]) for res in results if isinstance(res.get(metric), (int, float))
        ]
        if values:
          stats[metric] = mean_std(values)
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
  return rows, [m for m in METRICS if m in seen]


def _fmt(metric: str, mean: float, std: float, n: int) -> str:
  digits = 2 if metric in ('bleu', 'bleu_lit', 'chrf') else 3
  return f'{mean:.{digits}f}' + (f' ± {std:.{digits}f}' if n > 1 else '')


# ---------------------------------------------------------------------------- tables
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
    'Cells: mean ± sample std over runs (seeds); step: the evaluated checkpoint (median over runs).',
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


# ---------------------------------------------------------------------------- plots
def _short(key: str) -> str:
  return key.split('.')[-1]


def facets(groups: Sequence[dict]) -> list[tuple[str, list[tuple[str, dict]]]]:
  """[(panel title, [(legend label, group)])]: split many settings into panels (see module doc)."""
  varying = varying_keys(groups)
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
        cells.append((label, *mean_std(values)))
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
      tables = [by_length(r['results'][split], kind) for r in g['runs'] if split in r['results']]
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


def _train_max_len(runs: Sequence[dict]) -> int | None:
  for run in runs:
    path = os.path.join(run['workdir'], layout.CONFIG_FILE)
    if os.path.exists(path):
      value = (_load_json(path).get('data') or {}).get('train_max_len')
      if value:
        return int(value)
  return None


def curve_tags(scalars: dict[str, dict], metric: str = 'bleu') -> list[str]:
  """The few curves worth a figure: validation metric and loss first, then the training loss."""
  tags = sorted({t for s in scalars.values() for t in s if _CURVE_TAG.search(t)})
  order = (
    rf'(eval|val).*{re.escape(metric)}',
    r'(eval|val).*loss',
    r'train.*loss',
    r'(eval|val)',
    r'',
  )
  rank = lambda t: next(i for i, pattern in enumerate(order) if re.search(pattern, t))
  return sorted(tags, key=lambda t: (rank(t), t))[:_MAX_CURVE_TAGS]


# ---------------------------------------------------------------------------- main
def make_report(
  root: str, *, metric: str | None = None, seed_keys: Sequence[str] = ('seed',)
) -> dict:
  """Writes report.md, report.csv and plots/ under root; returns their paths."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{root}: no such directory (pass the --root of launch.sweep)')
  runs = collect_runs(root)
  with_results = [r for r in runs if r['results']]
  if not with_results:
    raise ValueError(
      f'{root}: no run has results yet (eval/SPLIT-STEP.json); run launch.sweep first'
    )
  metric = metric or primary_metric(with_results)
  max_len = _train_max_len(with_results)
  for run in with_results:
    run['results'] = {s: add_length_split(res, max_len) for s, res in run['results'].items()}
  groups = group_settings(with_results, seed_keys)
  rows, metrics = table_rows(groups)
  if metric not in metrics:
    raise ValueError(f'--metric={metric!r}: the results carry {metrics}')
  plot_dir = os.path.join(root, 'plots')
  os.makedirs(plot_dir, exist_ok=True)
  panels = facets(groups)
  plots: dict[str, list[str]] = collections.defaultdict(list)
  for split in dict.fromkeys(r['split'] for r in rows):
    name = f'{metric}-{_safe(split)}.png'
    bar_plot(os.path.join(plot_dir, name), panels, split, metric)
    plots[split].append(f'plots/{name}')
    for kind in _BY_LENGTH:
      if any(by_length(r['results'].get(split, {}), kind) for r in with_results):
        name = f'{kind}-{_safe(split)}.png'
        length_plot(os.path.join(plot_dir, name), panels, split, kind, max_len)
        plots['length'].append(f'plots/{name}')
  scalars = {
    r['name']: read_scalars(os.path.join(r['workdir'], layout.TB_DIR)) for r in with_results
  }
  for tag in curve_tags(scalars, metric):
    name = f'curves-{_safe(tag)}.png'
    if curve_plot(os.path.join(plot_dir, name), panels, tag, scalars):
      plots['curves'].append(f'plots/{name}')
  written = {os.path.basename(p) for ps in plots.values() for p in ps}
  for stale in glob.glob(os.path.join(plot_dir, '*.png')):  # from an earlier report of this root
    if os.path.basename(stale) not in written:
      os.remove(stale)
  md, csv_path = os.path.join(root, 'report.md'), os.path.join(root, 'report.csv')
  layout.write_text(csv_path, csv_text(rows, metrics))
  layout.write_text(md, markdown_text(root, runs, rows, metrics, plots, common_overrides(groups)))
  return {
    'markdown': md,
    'csv': csv_path,
    'plots': [os.path.join(root, p) for ps in plots.values() for p in ps],
  }


def main(argv: Sequence[str]) -> int:
  import argparse

  parser = argparse.ArgumentParser(
    prog='python -m launch.report', description=__doc__.split('\n')[0]
  )
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
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {out["markdown"]}, {out["csv"]} and {len(out["plots"])} plots')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

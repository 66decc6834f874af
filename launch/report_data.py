"""A sweep report's data: every run's overrides and results under a root, runs grouped into
settings (differing only in seed keys), the statistics over seeds, per-length accuracy tables, and
TensorBoard scalars read with TensorBoard's own loader (no TensorFlow). JAX-free.
"""

from __future__ import annotations

import collections
import glob
import json
import math
import os
import re
from typing import Any, Sequence

import numpy as np

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
  """One dict per workdir under root: name, index, overrides, done, results {split: json},
  workdir."""
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

r"""Throughput, MFU, compile time, memory and decode speed of a config, per sweep setting.

  python -m launch.benchmark --config=configs/multi30k.py:size=small [--sweep=positions]
      [--data=real|synthetic] [--steps=20] [--json=bench.json]

`--sweep` is a sweep the config file names (`positions`, `attention`, ...) or an explicit list of
override sets: `'model.position=none;model.position=t5,model.num_kv_heads=1'` (runs separated by
`;`, keys within a run by `,`).

`--pairs=N` (with 2+ settings) is the A/B: after the per-setting runs, each later setting is built
beside the first in the same process and the two train steps alternate, A B then B A, N pairs
(then `--decode_pairs` decode calls each way). The table gives the median and quartiles of the
per-pair speed-ups over the first setting. On a shared machine whose speed drifts from minute to
minute, the two calls of a pair see nearly the same machine; separate runs do not.

Every number comes from the project's real code: the trainer's jitted `train_step` (donated state,
mesh shardings) and `model.decoding.generate`. Per setting:
- compile: seconds to lower + compile the train step (no persistent cache), first batch shape;
- step: median seconds per step after warm-up, on batches already on the device; `host ms` is
  the data iterator + device transfer per batch, measured apart;
- tok/s: real (non-padding) target tokens per second; pad %: share of target slots that are padding;
- MFU: useful FLOPs (analytic, each sentence at its own lengths: padding is waste) per second over
  the peak: the device's dense peak on accelerators, on CPU a float32 matmul measured in this run.
  `exec MFU` counts FLOPs of the padded shapes as executed;
- faults/step: the process's minor page faults per timed step (median): ~1 per page of fresh
  memory a step writes, so a large count says its temporaries are mapped anew each call;
- `--profile`: share of op time per model part (attention, feed-forward, output + loss, dropout
  bits, scan stacking, ...; matmuls apart), from a jax.profiler trace of 3 more steps;
- decode: sentences/s and tokens/s for greedy and beam search, with the KV cache and without it.
  EOS is held back until `--decode_len`, so every sentence is exactly that long (an untrained model
  would stop at random places). Uncached recomputes the decoder over the whole prefix at every step
  (widths rounded up to multiples of 16 so it compiles a few shapes, not one per length).
"""

from __future__ import annotations

import ast
import datetime
import json
import os
import sys
import tempfile

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from launch import measure
from launch import report_bench
from launch import sweep_plan as sweep_lib

from train import cli
from train import config_file
from train import config_io
from train import data
from train import metrics as metrics_lib
from train import layout
from train import runtime


FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags, defined only when run as a program (tests import this module)."""
  config_flags.DEFINE_config_file('config', None, 'configs/NAME.py[:ARG]', lock_config=False)
  flags.DEFINE_string('sweep', None, 'Named sweep of the config, or "k=v,k=v;k=v" override sets.')
  flags.DEFINE_string('json', None, 'Write the results here (atomically).')
  flags.DEFINE_enum(
    'data',
    'real',
    ['real', 'synthetic'],
    "real: the config's training pipeline; synthetic: random full rows (no padding).",
  )
  flags.DEFINE_integer(
    'synthetic_len', 16, 'Source and target length of synthetic rows.', lower_bound=1
  )
  flags.DEFINE_integer(
    'steps',
    20,
    'Timed train steps (after one warm-up step per batch shape; --train=false: none).',
    lower_bound=1,
  )
  flags.DEFINE_bool('train', True, 'Time the train step; false: decode only, with initial params.')
  flags.DEFINE_list('decode', ['greedy', 'beam'], 'Decoding methods to time (empty: none).')
  flags.DEFINE_list('cache', ['cached', 'uncached'], 'cached and/or uncached decoding.')
  flags.DEFINE_integer('decode_batch', 8, 'Sentences per decode call.', lower_bound=1)
  flags.DEFINE_integer('decode_len', 64, 'Target tokens generated per sentence.', lower_bound=1)
  flags.DEFINE_integer(
    'decode_repeats',
    3,
    "Timed decode calls (median) after the compiling one (0: the compiling call's time).",
    lower_bound=0,
  )
  flags.DEFINE_integer('beam_size', 4, 'Beam width for method beam.', lower_bound=1)
  flags.DEFINE_integer(
    'pairs',
    0,
    'With a sweep of 2+ settings: after the per-setting runs, alternate each later setting with '
    'the first, this many train-step pairs (A B, B A, ...; none with --train=false), then '
    "--decode_pairs decode calls, and report the median [quartiles] of the pairs' speed-ups over "
    'the first setting.',
  )
  flags.DEFINE_integer(
    'decode_pairs', 8, 'With --pairs: decode-call pairs per method and cache.', lower_bound=0
  )
  flags.DEFINE_bool(
    'profile',
    False,
    'Also trace 3 train steps with jax.profiler and report the '
    'share of op time per model part (launch/op_profile.py).',
  )
  flags.DEFINE_bool(
    'compile_cache',
    False,
    'Reuse compiled programs from the persistent cache ($ATTNLAB_COMPILE_CACHE, else the build '
    "dir's): faster, but the compile column is then not a compile time.",
  )
  runtime.define_cpu_devices_flag()
  flags.DEFINE_string(
    'profile_dir',
    None,
    'Where the traces go, one subdirectory per setting (default: a new temporary directory).',
  )


# ============================================================================= settings


def parse_overrides(text):
  """'a.b=1,c=x;d=2' -> [{'a.b': 1, 'c': 'x'}, {'d': 2}] (values as Python literals if they
  parse)."""
  runs = []
  for chunk in filter(None, (c.strip() for c in text.split(';'))):
    run = {}
    for item in filter(None, (i.strip() for i in chunk.split(','))):
      key, sep, value = item.partition('=')
      if not sep:
        raise ValueError(f'--sweep item {item!r} is not key=value (e.g. model.position=t5)')
      try:
        run[key.strip()] = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError):
        run[key.strip()] = value.strip()
    runs.append(run)
  return runs


def sweep_runs(config_spec, sweep):
  """Override dicts of the benchmark: [{}] without --sweep."""
  if not sweep:
    return [{}]
  if '=' in sweep:
    return parse_overrides(sweep)
  path, arg = config_file.split_spec(config_spec)
  runs, seen = [], set()
  for overrides in sweep_lib.get_sweep(config_file.load_module(path), sweep, arg):
    # Speed does not depend on the seed: one run per setting of a multi-seed sweep.
    overrides = {k: v for k, v in overrides.items() if k != 'seed'}
    key = json.dumps(overrides, sort_keys=True, default=repr)
    if key not in seen:
      seen.add(key)
      runs.append(overrides)
  return runs


def apply_overrides(config, overrides):
  """A copy of `config` with dotted keys set; an unknown key raises naming the valid ones."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    node, parts = config, key.split('.')
    for i, part in enumerate(parts):
      if part not in node:
        where = '.'.join(parts[:i]) or 'config'
        raise ValueError(f'unknown config key {key!r}: {where} has {sorted(node.keys())}')
      if i < len(parts) - 1:
        node = node[part]
    with config.unlocked():
      node[parts[-1]] = value
  return config


def setting_name(overrides):
  return ','.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items()) or 'default'


# ============================================================================= one setting


def prepare_setting(config, overrides, args):
  """(resolved config, batches, host seconds, tokenizer or None) of one override set, as
  train.loop resolves and batches it (as many batches as the timed steps cycle through)."""
  config = apply_overrides(config, overrides)
  if args['data'] == 'real':
    data.build(config)
    tokenizer = data.get_tokenizer(config)
    config = config_io.resolve(config, tokenizer.vocab_size)  # as train.loop does
    batches, host = measure.real_batches(config, tokenizer, min(args['steps'], 20))
    return config, batches, host, tokenizer
  config = config_io.resolve(config, config.data.vocab_size)
  batches, host = measure.synthetic_batches(config, min(args['steps'], 4), args['synthetic_len'])
  return config, batches, host, None


def benchmark_setting(config, overrides, peak, ref, args):
  """Train + decode numbers for one override set; errors are recorded, not raised."""
  row = {'setting': setting_name(overrides), 'overrides': overrides}
  try:
    config, batches, host, tokenizer = prepare_setting(config, overrides, args)
    if args.get('train', True):
      profile_dir = args.get('profile_dir')  # set only with --profile
      if profile_dir:
        profile_dir = os.path.join(profile_dir, row['setting'].replace('/', '_'))
      train, module, params = measure.measure_train(
        config, batches, host, args['steps'], ref, profile_dir
      )
      if ref is None:
        train['mfu'] = train['flops_per_s'] / peak
        train['executed_mfu'] = train['executed_flops_per_s'] / peak
      row['train'] = train
    else:
      module, params = measure.init_params(config, batches[0])
    if args['decode'] and args['cache']:
      inputs = measure.decode_inputs(config, tokenizer, args['decode_batch'], args['synthetic_len'])
      row['decode'] = measure.measure_decode(
        module,
        params,
        inputs,
        args['decode'],
        args['cache'],
        args['decode_len'],
        args['beam_size'],
        args['decode_repeats'],
      )
  except Exception as e:  # pylint: disable=broad-except
    row['error'] = f'{type(e).__name__}: {e}'
  return row


# ============================================================================= paired A/B


class _Side:
  """One setting, ready to alternate with another: its train stepper (None with --train=false:
  decoding with initial params), the real target tokens of each batch, and its decode calls (each
  a no-argument function that decodes to completion)."""

  def __init__(self, config, overrides, args):
    cfg, batches, _, tokenizer = prepare_setting(config, overrides, args)
    self.tokens = [float(np.sum(b['weights'])) for b in batches]
    self.stepper = None
    if args.get('train', True):
      self.stepper = measure.TrainStepper(cfg, batches)
      module = self.stepper.module
      # A copy: the train steps donate the state, params included.
      params = jax.tree.map(lambda x: x.copy(), self.stepper.state.params)
    else:
      module, params = measure.init_params(cfg, batches[0])
    inputs = measure.decode_inputs(cfg, tokenizer, args['decode_batch'], args['synthetic_len'])
    self.decodes = {
      f'{m}_{c}': measure.decode_call(
        module, params, inputs, m, c, args['decode_len'], args['beam_size']
      )
      for m in args['decode']
      for c in args['cache']
    }
    for f in self.decodes.values():
      f()  # compile

  def step_seconds_per_token(self, times):
    return [t / self.tokens[i % len(self.tokens)] for i, t in enumerate(times)]


def paired_row(a, b, args):
  """Setting B against baseline A, alternated call by call (`measure.alternate`: A B, B A, ...):
  per measure, the median and quartiles of B's per-pair speed-up over A (`measure.pair_ratios`).
  Training compares seconds per real target token, so settings that change the batch compare."""
  row = {}
  if a.stepper and b.stepper:
    ta, tb = measure.alternate(a.stepper.step, b.stepper.step, args['pairs'])
    per_token_a, per_token_b = a.step_seconds_per_token(ta), b.step_seconds_per_token(tb)
    row['train'] = measure.pair_ratios(per_token_b, per_token_a)
    row['train']['seconds'] = {'baseline': ta, 'setting': tb}  # per pair, in pair order
  for key in sorted(a.decodes.keys() & b.decodes.keys()):
    fa, fb = a.decodes[key], b.decodes[key]
    da, db = measure.alternate(lambda i: fa(), lambda i: fb(), max(args['decode_pairs'], 1))
    row[key] = measure.pair_ratios(db, da)  # same sentences and lengths on both sides
    row[key]['seconds'] = {'baseline': da, 'setting': db}
  return row


def run_paired(config, runs, args, log=print):
  """Every setting after the first alternated with the first (the baseline), one pair of calls
  at a time: the A/B that a drifting shared machine cannot tilt. One list entry per setting;
  errors are recorded, not raised."""
  rows = [{'setting': setting_name(o), 'baseline': setting_name(runs[0])} for o in runs[1:]]
  try:
    base = _Side(config, runs[0], args)
  except Exception as e:  # pylint: disable=broad-except
    return [dict(row, error=f'baseline: {type(e).__name__}: {e}') for row in rows]
  out = []
  for overrides, row in zip(runs[1:], rows):
    try:
      row.update(paired_row(base, _Side(config, overrides, args), args))
      log(
        f'[paired] {row["setting"]} vs {row["baseline"]}: '
        + ', '.join(f'{k} {v["median"]:.3f}x' for k, v in row.items() if isinstance(v, dict))
      )
    except Exception as e:  # pylint: disable=broad-except
      row['error'] = f'{type(e).__name__}: {e}'
    out.append(row)
  return out


# ============================================================================= run


def run(config, config_spec, sweep, args, json_path=None):
  """The whole benchmark as a JSON-able dict."""
  # Compile times must be real; --compile_cache (the GPU check's dry run) trades that for speed.
  if args.get('compile_cache'):
    runtime.setup_runtime()  # the cache directory train.main uses
  jax.config.update('jax_enable_compilation_cache', bool(args.get('compile_cache')))
  info = measure.machine_info()
  ref = measure.MatmulReference('float32' if info['platform'] == 'cpu' else config.model.dtype)
  peak = metrics_lib.peak_flops(info['device_kind'], config.model.dtype)
  source = 'device spec'
  if peak is None:
    peak, source = ref.best, f'{ref.n}^3 float32 matmul, sampled after every step'
  else:
    peak *= jax.device_count()
  result = {
    'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
    'machine': info,
    'command': ' '.join(['python -m launch.benchmark'] + sys.argv[1:]),
    'config': config_spec,
    'args': args,
    'peak_flops_per_s': peak,
    'peak_source': source,
    'matmul_flops_per_s': ref.best,
    'matmul_flops_per_s_by_size': {str(k): v for k, v in ref.by_size.items()},
    'runs': [],
  }
  runs = sweep_runs(config_spec, sweep)
  for overrides in runs:
    result['runs'].append(
      benchmark_setting(config, overrides, peak, ref if source != 'device spec' else None, args)
    )
    print(f'[{len(result["runs"])}] {result["runs"][-1]["setting"]} done', flush=True)
    if json_path:  # after every setting: a long sweep that is stopped keeps what it measured
      layout.write_json(json_path, result, default=repr)
  if args.get('pairs') and len(runs) > 1:
    result['paired'] = run_paired(config, runs, args)
    if json_path:
      layout.write_json(json_path, result, default=repr)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  args = {
    'data': FLAGS.data,
    'synthetic_len': FLAGS.synthetic_len,
    'steps': FLAGS.steps,
    'train': FLAGS.train,
    'decode': [m for m in FLAGS.decode if m],
    'cache': [c for c in FLAGS.cache if c],
    'decode_batch': FLAGS.decode_batch,
    'decode_len': FLAGS.decode_len,
    'decode_repeats': FLAGS.decode_repeats,
    'beam_size': FLAGS.beam_size,
    'pairs': FLAGS.pairs,
    'decode_pairs': FLAGS.decode_pairs,
    # --profile: one trace directory per benchmark run (a subdirectory per setting)
    'compile_cache': FLAGS.compile_cache,
    'profile_dir': (FLAGS.profile_dir or tempfile.mkdtemp(prefix='attnlab_prof'))
    if FLAGS.profile
    else None,
  }
  for m in args['decode']:
    if m not in ('greedy', 'beam'):
      raise app.UsageError(f'--decode={m!r}; valid: greedy, beam')
  for c in args['cache']:
    if c not in ('cached', 'uncached'):
      raise app.UsageError(f'--cache={c!r}; valid: cached, uncached')
  try:
    runtime.use_cpu_devices(FLAGS.cpu_devices, FLAGS.config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  spec = flags.FLAGS['config'].config_filename
  runs = sweep_runs(spec, FLAGS.sweep)
  if FLAGS.pairs < 0 or (FLAGS.pairs and len(runs) < 2):
    raise app.UsageError(
      f'--pairs={FLAGS.pairs} needs a --sweep of at least two settings (the first is the '
      "baseline), e.g. --sweep='model.dropout_mask=bernoulli;model.dropout_mask=hash'"
    )
  for overrides in runs:  # every setting's values, before any data loads
    try:
      config_io.validate(apply_overrides(FLAGS.config, overrides))
    except (ValueError, KeyError) as e:
      raise cli.UsageError(f'{cli.one_line(e)} (setting {overrides or "base"})') from None
  result = run(FLAGS.config, spec, FLAGS.sweep, args, FLAGS.json)
  print(report_bench.benchmark_tables(result))
  failed = [f'{r["setting"]}: {r["error"]}' for r in result['runs'] if r.get('error')]
  failed += [
    f'paired {r["setting"]}: {r["error"]}' for r in result.get('paired', []) if 'error' in r
  ]
  if failed:
    cli.fail(f'{len(failed)} setting(s) failed: ' + '; '.join(failed), cli.RUNTIME_EXIT)


if __name__ == '__main__':
  cli.run(main, define_flags=define_flags, required=('config',), huge_pages=True)

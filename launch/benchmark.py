r"""Throughput, MFU, compile time, memory and decode speed of a config, per sweep setting.

  python -m launch.benchmark --config=configs/multi30k.py:size=small [--sweep=positions]
      [--data=real|synthetic] [--steps=20] [--json=bench.json]

`--sweep` is a sweep the config file names (`positions`, `attention`, ...) or an explicit list of
override sets: `'model.position=none;model.position=t5,model.num_kv_heads=1'` (runs separated by
`;`, keys within a run by `,`).

Every number comes from the project's real code: the trainer's jitted `train_step` (donated state,
mesh shardings) and `model.decoding.generate`. Per setting:
- compile: seconds to lower + compile the train step (no persistent cache), first batch shape;
- step: median seconds per step after warm-up, on batches already on the device; `host ms` is
  the data iterator + device transfer per batch, measured apart;
- tok/s: real (non-padding) target tokens per second; pad %: share of target slots that are padding;
- MFU: useful FLOPs (analytic, each sentence at its own lengths: padding is waste) per second over
  the peak: the device's dense peak on accelerators, on CPU a float32 matmul measured in this run.
  `exec MFU` counts FLOPs of the padded shapes as executed;
- `--profile`: share of op time per model part (attention, feed-forward, output + loss, dropout
  bits, scan stacking, ...; matmuls apart), from a jax.profiler trace of 3 more steps;
- decode: sentences/s and tokens/s for greedy and beam search, with the KV cache and without it.
  EOS is held back until `--decode_len`, so every sentence is exactly that long (an untrained model
  would stop at random places). Uncached recomputes the decoder over the whole prefix at every step
  (widths rounded up to multiples of 16 so it compiles a few shapes, not one per length).
"""

from __future__ import annotations

import ast
import collections
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from model import decoding
from model import vocab
from train import config_io
from train import mesh as mesh_lib
from train import metrics as metrics_lib
from train import runtime
from train import trainer

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
  flags.DEFINE_integer('synthetic_len', 16, 'Source and target length of synthetic rows.')
  flags.DEFINE_integer('steps', 20, 'Timed train steps (after one warm-up step per batch shape).')
  flags.DEFINE_bool('train', True, 'Time the train step; false: decode only, with initial params.')
  flags.DEFINE_list('decode', ['greedy', 'beam'], 'Decoding methods to time (empty: none).')
  flags.DEFINE_list('cache', ['cached', 'uncached'], 'cached and/or uncached decoding.')
  flags.DEFINE_integer('decode_batch', 8, 'Sentences per decode call.')
  flags.DEFINE_integer('decode_len', 64, 'Target tokens generated per sentence.')
  flags.DEFINE_integer('decode_repeats', 3, 'Timed decode calls (median) after the compiling one.')
  flags.DEFINE_integer('beam_size', 4, 'Beam width for method beam.')
  flags.DEFINE_bool(
    'profile',
    False,
    'Also trace 3 train steps with jax.profiler and report the '
    'share of op time per model part (launch/op_profile.py).',
  )
  flags.DEFINE_string(
    'cpu_devices',
    'auto',
    'As train.main: auto = one single-threaded XLA device per core (largest count dividing '
    'the rows), N = that many, 1 = one device using every thread.',
  )
  flags.DEFINE_string(
    'profile_dir',
    None,
    'Where the traces go, one subdirectory per setting (default: a new temporary directory).',
  )


# ============================================================================= reference


class MatmulReference:
  """Float32 (or bf16) square matmul FLOP/s of all devices at once: the CPU's "peak" for MFU.

  The machine may be shared, so `rate(seconds)` is sampled again right after every timed step
  and each step is compared with the matmul rate of the same moment. Rates come in wall-clock
  and in process CPU time (all threads): CPU time barely moves when other processes compete for
  the cores, so the CPU-time ratio is the steadier MFU on a busy machine (it cannot see cores
  left idle, which the wall-clock ratio does).
  """

  def __init__(self, dtype='float32', sizes=(512, 1024, 2048), repeats=5):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel

    # One matmul per device, all at once: with --cpu_devices the cores are separate
    # single-threaded devices, and the machine's rate is their sum (1 device: as before).
    devices = jax.devices()
    self.devices = len(devices)
    mesh = jax.sharding.Mesh(devices, ('d',))
    sharding = NamedSharding(mesh, PartitionSpec('d'))
    self.by_size, self._ops = {}, {}
    for n in sizes:
      shape = (self.devices, n, n)
      a = jax.device_put(jax.random.normal(jax.random.key(0), shape, dtype), sharding)
      b = jax.device_put(jax.random.normal(jax.random.key(1), shape, dtype), sharding)
      f = jax.jit(lambda a, b: jnp.einsum('bij,bjk->bik', a, b), out_shardings=sharding)
      f(a, b).block_until_ready()
      self._ops[n] = (f, a, b)
      self.by_size[n] = statistics.median(self._time(n)[0] for _ in range(repeats))
    self.n = max(self.by_size, key=self.by_size.get)
    self.best = self.by_size[self.n]

  def _time(self, n):
    f, a, b = self._ops[n]
    t0, c0 = time.perf_counter(), time.process_time()
    f(a, b).block_until_ready()
    flops = 2.0 * n**3 * self.devices
    return flops / (time.perf_counter() - t0), flops / max(time.process_time() - c0, 1e-9)

  def rate(self, seconds):
    """Median (wall, CPU-time) FLOP/s of the best size over about `seconds` (>= 3 runs)."""
    out, t_end = [], time.perf_counter() + seconds
    while len(out) < 3 or time.perf_counter() < t_end:
      out.append(self._time(self.n))
    return tuple(statistics.median(x) for x in zip(*out))


# ============================================================================= settings


def parse_overrides(text):
  """'a.b=1,c=x;d=2' -> [{'a.b': 1, 'c': 'x'}, {'d': 2}] (values as Python literals if they parse)."""
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
  from launch import sweep as sweep_lib  # pylint: disable=import-outside-toplevel

  path, arg = sweep_lib.split_config_spec(config_spec)
  runs, seen = [], set()
  for overrides in sweep_lib.get_sweep(sweep_lib.load_config_module(path), sweep, arg):
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


# ============================================================================= batches


def synthetic_batches(config, n, length, seed=0):
  """`n` batches of full rows: every token real, so tokens/s here is the no-padding ceiling."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  rows, vocab_size = int(config.batch_size), int(config.model.vocab_size)
  out = []
  for _ in range(n):
    tgt = rng.integers(4, vocab_size, (rows, length), dtype=np.int32)
    tgt[:, -1] = vocab.EOS
    pos = np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy()
    seg = np.ones((rows, length), np.int32)
    batch = {
      'decoder_inputs': np.concatenate([np.full((rows, 1), vocab.BOS, np.int32), tgt[:, :-1]], 1),
      'targets': tgt,
      'targets_segment': seg,
      'targets_position': pos,
      'weights': np.ones((rows, length), np.float32),
    }
    if config.model.arch != 'decoder_only':
      src = rng.integers(4, vocab_size, (rows, length), dtype=np.int32)
      src[:, -1] = vocab.EOS
      batch.update(inputs=src, inputs_segment=seg.copy(), inputs_position=pos.copy())
    out.append(batch)
  return out, None


def real_batches(config, tokenizer, n):
  """`n` training batches from the config's pipeline, and the mean host seconds per batch."""
  from train import data  # pylint: disable=import-outside-toplevel

  it = data.make_train_iterator(config, tokenizer)
  try:
    next(it)  # let the prefetch thread start
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(n)]
    host = (time.perf_counter() - t0) / n
  finally:
    it.close()
  return batches, host


def segment_lengths(batch):
  """(source length, target length) of every sentence in the batch (packed rows: per segment)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  tseg = batch.get('targets_segment')
  tseg = (batch['targets'] > 0).astype(np.int32) if tseg is None else tseg
  sseg = None
  if 'inputs' in batch:
    sseg = batch.get('inputs_segment')
    sseg = (batch['inputs'] > 0).astype(np.int32) if sseg is None else sseg
  m = int(tseg.max()) + 1
  pairs = []
  for r in range(tseg.shape[0]):
    t = np.bincount(tseg[r], minlength=m)
    s = np.bincount(sseg[r], minlength=m) if sseg is not None else np.zeros(m, int)
    pairs.extend((int(s[i]), int(t[i])) for i in range(1, m) if t[i] > 0)
  return pairs


def useful_flops(model_cfg, batch):
  """Training FLOPs of the real sentences only, each at its own lengths."""
  total = 0.0
  for (s, t), count in collections.Counter(segment_lengths(batch)).items():
    if model_cfg.arch == 'decoder_only':
      total += metrics_lib.flops_per_token(model_cfg, 0, t) * t * count
    else:
      total += metrics_lib.flops_per_token(model_cfg, s, t) * t * count
  return total


def shape_key(batch):
  return tuple(sorted((k, v.shape) for k, v in batch.items()))


# ============================================================================= training


def measure_train(config, batches, host_s, steps, ref=None, profile_dir=None):
  """Compile + step time of the trainer's jitted train_step on `batches` (cycled).

  With `ref` (CPU), the matmul reference is sampled after every step (for a quarter of the
  step's time) and `mfu` is the median of the per-step ratios. With `profile_dir`, 3 more steps
  run under the profiler and `op_time_s` holds their op time per model part.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import model  # pylint: disable=import-outside-toplevel

  mesh = mesh_lib.make_mesh(config.mesh)
  t = trainer.setup(config, mesh, batches[0])  # exactly what train.loop builds
  module, state, step_fn = t.module, t.state, t.step_fn

  t0 = time.perf_counter()
  device_batches = [mesh_lib.global_batch(b, mesh) for b in batches]
  jax.block_until_ready(device_batches)
  put_s = (time.perf_counter() - t0) / len(batches)

  compiled, compile_s = {}, []
  for b in device_batches:  # every distinct shape compiles once, before timing
    key = shape_key(b)
    if key not in compiled:
      t0 = time.perf_counter()
      compiled[key] = step_fn.lower(state, b).compile()
      compile_s.append(time.perf_counter() - t0)
      state, m = compiled[key](state, b)  # warm-up run of this shape
      jax.block_until_ready(m)
  useful = [useful_flops(config.model, b) for b in batches]
  executed = [metrics_lib.batch_flops(config.model, b) for b in batches]
  times, cpu_times, ref_rates = [], [], []
  for i in range(steps):
    b = device_batches[i % len(device_batches)]
    t0, c0 = time.perf_counter(), time.process_time()
    state, m = compiled[shape_key(b)](state, b)
    jax.block_until_ready(m['loss'])
    times.append(time.perf_counter() - t0)
    cpu_times.append(time.process_time() - c0)
    if ref is not None:
      ref_rates.append(ref.rate(0.25 * times[-1]))
  loss = float(m['loss'])

  idx = [i % len(batches) for i in range(steps)]
  total_t = sum(times)
  tokens = sum(float(np.sum(batches[i]['weights'])) for i in idx)
  slots = sum(float(batches[i]['targets'].size) for i in idx)
  stats = jax.devices()[0].memory_stats() or {}
  out = {
    'params': model.count_params(state.params),
    'compile_s': compile_s[0],
    'compile_total_s': sum(compile_s),
    'num_shapes': len(compiled),
    'step_s': statistics.median(times),
    'step_s_min': min(times),
    'step_cpu_s': statistics.median(cpu_times),
    'host_s': (host_s or 0.0) + put_s,
    'target_tokens_per_step': tokens / steps,
    'tokens_per_s': tokens / total_t,
    'padding_fraction': 1.0 - tokens / slots,
    'flops_per_s': sum(useful[i] for i in idx) / total_t,
    'executed_flops_per_s': sum(executed[i] for i in idx) / total_t,
    'peak_memory_bytes': stats.get('peak_bytes_in_use'),
    'final_loss': loss,
  }
  if profile_dir:
    from launch import op_profile  # pylint: disable=import-outside-toplevel

    b = device_batches[0]
    fn, holder = compiled[shape_key(b)], [state]

    def run_step():
      holder[0], step_metrics = fn(holder[0], b)
      return step_metrics

    trace = op_profile.trace_steps(run_step, 3, profile_dir)
    out['op_time_s'] = op_profile.breakdown(trace, fn.as_text())
    state = holder[0]
  if ref_rates:
    # Per-step pairs cancel most of the load other processes put on a shared machine.
    wall, cpu = zip(*ref_rates)
    out['matmul_flops_per_s'] = statistics.median(wall)
    out['mfu'] = statistics.median(useful[i] / t / r for i, t, r in zip(idx, times, wall))
    out['executed_mfu'] = statistics.median(
      executed[i] / t / r for i, t, r in zip(idx, times, wall)
    )
    out['cpu_time_mfu'] = statistics.median(
      useful[i] / t / r for i, t, r in zip(idx, cpu_times, cpu)
    )
    out['step_matmul_equiv'] = statistics.median(t * r for t, r in zip(times, wall))
    out['step_matmul_equiv_cpu'] = statistics.median(t * r for t, r in zip(cpu_times, cpu))
  return out, module, state.params


# ============================================================================= decoding


def init_params(config, batch):
  """(module, unboxed initial params) for decode-only runs."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  import model  # pylint: disable=import-outside-toplevel

  module = model.build_model(config.model)
  b = {k: jnp.asarray(v) for k, v in batch.items()}
  params = jax.jit(lambda: module.init(jax.random.key(config.seed), b)['params'])()
  return module, nn.unbox(params)


class FixedLength:
  """Stands in for the model inside `model.decoding.generate` (same `cfg` and `apply`), with
  EOS pushed to -1e9 so every sentence runs to the forced EOS at max_len: decode timings then
  count the same tokens on every side. `cached=False` decodes through
  `decoding.Uncached` (the prefix recomputed each step)."""

  def __init__(self, module, cached=True):
    self.inner = module if cached else decoding.Uncached(module)
    self.cfg = module.cfg

  def apply(self, variables, *args, method=None, mutable=False):
    if method != 'decode':
      return self.inner.apply(variables, *args, method=method)
    logits, mut = self.inner.apply(variables, *args, method='decode', mutable=mutable)
    return logits.at[..., vocab.EOS].set(-1e9), mut


def decode_inputs(config, tokenizer, n, length, seed=1):
  """`n` source sentences: a middle-length batch of the eval split, or random tokens."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  if tokenizer is not None and config.data.eval_splits:
    from train import data  # pylint: disable=import-outside-toplevel

    batches = data.make_eval_batches(config, tokenizer, config.data.eval_splits[0], batch_size=n)
    full = [b for b in batches if np.all(b['index'] >= 0)] or batches
    b = full[len(full) // 2]
    return {k: b[k] for k in ('inputs', 'inputs_segment', 'inputs_position') if k in b}
  rng = np.random.default_rng(seed)
  src = rng.integers(4, int(config.model.vocab_size), (n, length), dtype=np.int32)
  src[:, -1] = vocab.EOS
  return {'inputs': src}


def measure_decode(module, params, inputs, methods, caches, max_len, beam_size, repeats):
  """{'{method}_{cached|uncached}': {sentences_per_s, tokens_per_s, compile_s, seconds}}.

  Variants are timed round-robin (each repeat runs every variant once), so a change in the
  machine's load hits them all alike and the speed-ups stay comparable.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  runs = {}
  for cache in caches:
    adapter = FixedLength(module, cached=(cache == 'cached'))
    for method in methods:
      runs[f'{method}_{cache}'] = lambda a=adapter, m=method: decoding.generate(
        a, params, inputs, method=m, beam_size=beam_size, max_len=max_len
      )
  first, times, cpu, tokens = {}, collections.defaultdict(list), collections.defaultdict(list), {}
  for name, fn in runs.items():
    t0 = time.perf_counter()
    tokens[name] = fn()
    first[name] = time.perf_counter() - t0
  for _ in range(repeats):
    for name, fn in runs.items():
      t0, c0 = time.perf_counter(), time.process_time()
      fn()
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  out = {}
  for name in runs:
    sec = statistics.median(times[name]) if times[name] else first[name]
    n, real = tokens[name].shape[0], float(np.sum(tokens[name] != 0))
    out[name] = {
      'seconds': sec,
      'compile_s': max(first[name] - sec, 0.0),
      'cpu_seconds': statistics.median(cpu[name]) if cpu[name] else None,
      'sentences_per_s': n / sec,
      'tokens_per_s': real / sec,
      'tokens_per_sentence': real / n,
    }
  for method in methods:
    c, u = out.get(f'{method}_cached'), out.get(f'{method}_uncached')
    if c and u:
      out[f'{method}_speedup'] = u['seconds'] / c['seconds']
      if c['cpu_seconds']:
        out[f'{method}_speedup_cpu_time'] = u['cpu_seconds'] / c['cpu_seconds']
  return out


# ============================================================================= one setting


def benchmark_setting(config, overrides, peak, ref, args):
  """Train + decode numbers for one override set; errors are recorded, not raised."""
  row = {'setting': setting_name(overrides), 'overrides': overrides}
  try:
    config = apply_overrides(config, overrides)
    tokenizer = None
    if args['data'] == 'real':
      from train import data  # pylint: disable=import-outside-toplevel

      data.build(config)
      tokenizer = data.get_tokenizer(config)
      config = config_io.resolve(config, tokenizer.vocab_size)  # as train.loop does
      batches, host = real_batches(config, tokenizer, min(args['steps'], 20))
    else:
      config = config_io.resolve(config, config.data.vocab_size)
      batches, host = synthetic_batches(config, min(args['steps'], 4), args['synthetic_len'])
    if args.get('train', True):
      profile_dir = args.get('profile_dir')  # set only with --profile
      if profile_dir:
        profile_dir = os.path.join(profile_dir, row['setting'].replace('/', '_'))
      train, module, params = measure_train(config, batches, host, args['steps'], ref, profile_dir)
      if ref is None:
        train['mfu'] = train['flops_per_s'] / peak
        train['executed_mfu'] = train['executed_flops_per_s'] / peak
      row['train'] = train
    else:
      module, params = init_params(config, batches[0])
    if args['decode'] and args['cache']:
      inputs = decode_inputs(config, tokenizer, args['decode_batch'], args['synthetic_len'])
      row['decode'] = measure_decode(
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


# ============================================================================= report


def _fmt(v, spec):
  return '-' if v is None else format(v, spec)


def format_tables(result):
  """Markdown tables: training, then decoding."""
  lines = [
    f'{result["date"]} | {result["machine"]["description"]} | peak '
    f'{result["peak_flops_per_s"] / 1e9:.1f} GFLOP/s ({result["peak_source"]})',
    '',
    '| setting | params | compile s | shapes | step ms | host ms | tok/step | real tok/s | pad % '
    '| GFLOP/s | matmul GFLOP/s | MFU | exec MFU | CPU-time MFU | cost/token | peak mem MB |',
    '|---' * 16 + '|',
  ]
  base = None
  for r in result['runs']:
    t = r.get('train')
    if t is None:
      lines.append(
        f'| {r["setting"]} | {"error: " + r["error"] if "error" in r else "not timed"} |'
      )
      continue
    mem = t['peak_memory_bytes'] / 2**20 if t['peak_memory_bytes'] else None
    # Step CPU time in matmul-equivalents per real token: comparable across settings even when
    # the machine's load changed between them. 1.00 = the first setting.
    cost = (
      t.get('step_matmul_equiv_cpu', t['step_s'] * result['peak_flops_per_s'])
      / t['target_tokens_per_step']
    )
    base = base or cost
    ref = t.get('matmul_flops_per_s')
    lines.append(
      f'| {r["setting"]} | {t["params"] / 1e6:.2f}M | {t["compile_s"]:.1f} | {t["num_shapes"]} | '
      f'{1e3 * t["step_s"]:.0f} | {1e3 * t["host_s"]:.1f} | {t["target_tokens_per_step"]:.0f} | '
      f'{t["tokens_per_s"]:,.0f} | {100 * t["padding_fraction"]:.1f} | '
      f'{t["flops_per_s"] / 1e9:.1f} | {_fmt(ref and ref / 1e9, ".1f")} | {100 * t["mfu"]:.1f}% | '
      f'{100 * t["executed_mfu"]:.1f}% | {_fmt(t.get("cpu_time_mfu", 0) * 100 or None, ".1f")}'
      f' | {cost / base:.2f} | {_fmt(mem, ".0f")} |'
    )
  dec = [r for r in result['runs'] if r.get('decode')]
  if dec:
    keys = [k for k in dec[0]['decode'] if 'speedup' not in k]
    lines += [
      '',
      '| setting | '
      + ' | '.join(f'{k} sent/s (tok/s)' for k in keys)
      + ' | speed-up (uncached / cached) |',
      '|---' * (len(keys) + 2) + '|',
    ]
    for r in dec:
      d = r['decode']
      cells = [
        f'{d[k]["sentences_per_s"]:.1f} ({d[k]["tokens_per_s"]:,.0f})' if k in d else '-'
        for k in keys
      ]
      speed = ', '.join(
        f'{k[:-8]} {v:.1f}x (CPU time {d.get(k + "_cpu_time", 0):.1f}x)'
        for k, v in d.items()
        if k.endswith('speedup')
      )
      lines.append(f'| {r["setting"]} | ' + ' | '.join(cells) + f' | {speed or "-"} |')
  prof = [r for r in result['runs'] if r.get('train', {}).get('op_time_s')]
  if prof:
    from launch import op_profile  # pylint: disable=import-outside-toplevel

    cats = sorted(
      {c for r in prof for c in r['train']['op_time_s']},
      key=lambda c: -sum(r['train']['op_time_s'].get(c, 0) for r in prof),
    )
    lines += [
      '',
      'Share of op time (3 profiled steps, all compute threads):',
      '',
      '| part | ' + ' | '.join(r['setting'] for r in prof) + ' |',
      '|---' * (len(prof) + 1) + '|',
    ]
    share = [op_profile.shares(r['train']['op_time_s']) for r in prof]
    for c in cats:
      lines.append(f'| {c} | ' + ' | '.join(f'{100 * s.get(c, 0):.1f}%' for s in share) + ' |')
  for r in result['runs']:
    if r.get('error') and r.get('train'):
      lines.append(f'{r["setting"]}: error: {r["error"]}')
  return '\n'.join(lines)


def machine_info():
  import jax  # pylint: disable=import-outside-toplevel

  dev = jax.devices()[0]
  kind = dev.device_kind
  desc = (
    f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores'
    if dev.platform == 'cpu'
    else kind
  )
  return {
    'platform': dev.platform,
    'device_kind': kind,
    'num_devices': jax.device_count(),
    'cpu_count': os.cpu_count(),
    'jax': jax.__version__,
    'description': f'{desc}, {jax.device_count()} {dev.platform} device(s), jax {jax.__version__}',
  }


def run(config, config_spec, sweep, args, json_path=None):
  """The whole benchmark as a JSON-able dict."""
  import jax  # pylint: disable=import-outside-toplevel

  jax.config.update('jax_enable_compilation_cache', False)  # compile times must be real
  info = machine_info()
  ref = MatmulReference('float32' if info['platform'] == 'cpu' else config.model.dtype)
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
  for overrides in sweep_runs(config_spec, sweep):
    result['runs'].append(
      benchmark_setting(config, overrides, peak, ref if source != 'device spec' else None, args)
    )
    print(f'[{len(result["runs"])}] {result["runs"][-1]["setting"]} done', flush=True)
    if json_path:  # after every setting: a long sweep that is stopped keeps what it measured
      from launch.sweep import write_json_atomic  # pylint: disable=import-outside-toplevel

      write_json_atomic(json_path, result)
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
    # --profile: one trace directory per benchmark run (a subdirectory per setting)
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
  rows = FLAGS.config.batch_size // max(int(FLAGS.config.optim.grad_accum_steps), 1)
  try:
    runtime.configure_cpu_devices(runtime.cpu_devices_for(FLAGS.cpu_devices, rows))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  spec = flags.FLAGS['config'].config_filename
  result = run(FLAGS.config, spec, FLAGS.sweep, args, FLAGS.json)
  print(format_tables(result))
  if any(r.get('error') for r in result['runs']):
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)

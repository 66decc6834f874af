"""The measuring kit shared by launch.benchmark and launch.peer: the matmul reference (the CPU's
"peak"), real and synthetic batches with their useful FLOPs, the timed train step (the trainer's
own `setup`) and timed decoding (held-back EOS, cached and uncached).
"""

from __future__ import annotations

import collections
import os
import platform
import statistics
import time

try:
  import resource  # Unix only
except ImportError:  # Windows: no fault counts
  resource = None

from flax import linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec
import jax.numpy as jnp
import numpy as np

from launch import op_profile
import model
from model import decoding
from model import vocab
from train import cli
from train import data
from train import mesh as mesh_lib
from train import metrics as metrics_lib
from train import trainer


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


# ============================================================================= batches


def synthetic_batches(config, n, length, seed=0):
  """`n` batches of full rows: every token real, so tokens/s here is the no-padding ceiling."""

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


def _put_batches(batches, mesh):
  """The batches as global device arrays, and the mean seconds it took to put one there."""
  t0 = time.perf_counter()
  device_batches = [mesh_lib.global_batch(b, mesh) for b in batches]
  jax.block_until_ready(device_batches)
  return device_batches, (time.perf_counter() - t0) / len(batches)


def _compile_shapes(step_fn, state, device_batches):
  """Compiles `step_fn` once per distinct batch shape, then runs that shape once (warm-up).

  Returns ({shape_key: compiled step}, compile seconds per shape, state, last step's metrics).
  """
  compiled, compile_s, m = {}, [], None
  for b in device_batches:  # every distinct shape compiles once, before timing
    key = shape_key(b)
    if key not in compiled:
      t0 = time.perf_counter()
      compiled[key] = step_fn.lower(state, b).compile()
      compile_s.append(time.perf_counter() - t0)
      state, m = compiled[key](state, b)  # warm-up run of this shape
      jax.block_until_ready(m)
  return compiled, compile_s, state, m


class TrainStepper:
  """The trainer's jitted train step on `batches` (cycled), built as train.loop builds it,
  compiled and run once per batch shape: `step(i)` then runs batch i % len(batches) to
  completion. `measure_train` times it; `launch.peer` alternates it step by step with the
  peer's."""

  def __init__(self, config, batches):
    mesh = mesh_lib.make_mesh(config.mesh)
    t = trainer.setup(config, mesh, batches[0])  # exactly what train.loop builds
    self.module = t.module
    self.device_batches, self.put_s = _put_batches(batches, mesh)
    self.compiled, self.compile_s, self.state, self.metrics = _compile_shapes(
      t.step_fn, t.state, self.device_batches
    )

  def batch(self, i):
    return self.device_batches[i % len(self.device_batches)]

  def step(self, i):
    b = self.batch(i)
    self.state, self.metrics = self.compiled[shape_key(b)](self.state, b)
    jax.block_until_ready(self.metrics['loss'])


def _time_steps(stepper, steps, ref):
  """`steps` timed steps of `stepper`; with `ref`, the matmul reference is sampled after each
  step for a quarter of its time.

  Returns (wall seconds, CPU seconds, reference rates, minor page faults) per step.
  """
  times, cpu_times, ref_rates, faults = [], [], [], []
  for i in range(steps):
    f0 = minor_faults()
    t0, c0 = time.perf_counter(), time.process_time()
    stepper.step(i)
    times.append(time.perf_counter() - t0)
    cpu_times.append(time.process_time() - c0)
    f1 = minor_faults()
    faults.append(None if f0 is None else f1 - f0)
    if ref is not None:
      ref_rates.append(ref.rate(0.25 * times[-1]))
  return times, cpu_times, ref_rates, faults


def minor_faults():
  """This process's minor page faults so far (None where `resource` is missing: Windows). A
  step that maps fresh memory for its temporaries faults once per page it writes
  (docs/performance.md, "Huge pages for malloc")."""
  if resource is None:
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _throughput(batches, idx, times, useful, executed):
  """Target tokens, padding and FLOP/s of the timed steps (step i ran `batches[idx[i]]`)."""
  total_t = sum(times)
  tokens = sum(float(np.sum(batches[i]['weights'])) for i in idx)
  slots = sum(float(batches[i]['targets'].size) for i in idx)
  return {
    'target_tokens_per_step': tokens / len(idx),
    'tokens_per_s': tokens / total_t,
    'padding_fraction': 1.0 - tokens / slots,
    'flops_per_s': sum(useful[i] for i in idx) / total_t,
    'executed_flops_per_s': sum(executed[i] for i in idx) / total_t,
  }


def _profile_steps(fn, state, batch, profile_dir):
  """3 steps of the compiled `fn` under the profiler: (state, op time per model part)."""
  holder = [state]

  def run_step():
    holder[0], step_metrics = fn(holder[0], batch)
    return step_metrics

  trace = op_profile.trace_steps(run_step, 3, profile_dir)
  return holder[0], op_profile.breakdown(trace, fn.as_text())


def _mfu(idx, times, cpu_times, ref_rates, useful, executed):
  """MFU as the median of per-step ratios to the matmul rate sampled right after each step."""
  # Per-step pairs cancel most of the load other processes put on a shared machine.
  wall, cpu = zip(*ref_rates)
  return {
    'matmul_flops_per_s': statistics.median(wall),
    'mfu': statistics.median(useful[i] / t / r for i, t, r in zip(idx, times, wall)),
    'executed_mfu': statistics.median(executed[i] / t / r for i, t, r in zip(idx, times, wall)),
    'cpu_time_mfu': statistics.median(useful[i] / t / r for i, t, r in zip(idx, cpu_times, cpu)),
    'step_matmul_equiv': statistics.median(t * r for t, r in zip(times, wall)),
    'step_matmul_equiv_cpu': statistics.median(t * r for t, r in zip(cpu_times, cpu)),
  }


def measure_train(config, batches, host_s, steps, ref=None, profile_dir=None):
  """Compile + step time of the trainer's jitted train_step on `batches` (cycled).

  With `ref` (CPU), the matmul reference is sampled after every step (for a quarter of the
  step's time) and `mfu` is the median of the per-step ratios. With `profile_dir`, 3 more steps
  run under the profiler and `op_time_s` holds their op time per model part.
  """

  s = TrainStepper(config, batches)
  useful = [useful_flops(config.model, b) for b in batches]
  executed = [metrics_lib.batch_flops(config.model, b) for b in batches]
  times, cpu_times, ref_rates, faults = _time_steps(s, steps, ref)
  loss = float(s.metrics['loss'])

  idx = [i % len(batches) for i in range(steps)]
  stats = jax.devices()[0].memory_stats() or {}
  out = {
    'params': model.count_params(s.state.params),
    'compile_s': s.compile_s[0],
    'compile_total_s': sum(s.compile_s),
    'num_shapes': len(s.compiled),
    'step_s': statistics.median(times),
    'step_s_min': min(times),
    'step_cpu_s': statistics.median(cpu_times),
    'minor_faults_per_step': None if None in faults else statistics.median(faults),
    'host_s': (host_s or 0.0) + s.put_s,
    **_throughput(batches, idx, times, useful, executed),
    'peak_memory_bytes': stats.get('peak_bytes_in_use'),
    'final_loss': loss,
  }
  if profile_dir:
    b = s.batch(0)
    s.state, out['op_time_s'] = _profile_steps(s.compiled[shape_key(b)], s.state, b, profile_dir)
  if ref_rates:
    out.update(_mfu(idx, times, cpu_times, ref_rates, useful, executed))
  return out, s.module, s.state.params


# ============================================================================= paired timing


def alternate(fn_a, fn_b, n, clock=time.perf_counter):
  """Times `fn_a(i)` and `fn_b(i)` for i < n, one right after the other: A then B for even i,
  B then A for odd i. Returns (A's seconds, B's seconds), one per i.

  On a shared machine whose speed drifts over seconds to minutes, the two calls of a pair see
  nearly the same machine, so the ratio of a pair is steadier than a ratio of separate runs."""
  ta, tb = [], []
  for i in range(n):
    order = ((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta))
    for fn, times in order:
      t0 = clock()
      fn(i)
      times.append(clock() - t0)
  return ta, tb


def pair_ratios(ta, tb):
  """{median, q1, q3, pairs} of tb[i] / ta[i] (B's seconds over A's: A's speed-up over B when
  both did the same work). The quartiles are `statistics.quantiles`' inclusive method (NumPy's
  default 'linear' percentile): they stay within the ratios seen, so min <= q1 <= median <= q3
  <= max however few pairs there are (the exclusive method extrapolates past the ends: with two
  pairs its q1 can fall below zero). One pair gives its ratio for all three."""
  if not ta or len(ta) != len(tb):
    raise ValueError(
      f'pair_ratios needs equally many times on both sides, got {len(ta)}, {len(tb)}'
    )
  ratios = [b / a for a, b in zip(ta, tb)]
  q1, _, q3 = (
    statistics.quantiles(ratios, n=4, method='inclusive') if len(ratios) > 1 else ratios * 3
  )
  return {'median': statistics.median(ratios), 'q1': q1, 'q3': q3, 'pairs': len(ratios)}


# ============================================================================= decoding


def init_params(config, batch):
  """(module, unboxed initial params) for decode-only runs."""

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
    self.beams_share_source = getattr(self.inner, 'beams_share_source', False)

  def apply(self, variables, *args, method=None, mutable=False):
    if method != 'decode':
      return self.inner.apply(variables, *args, method=method)
    logits, mut = self.inner.apply(variables, *args, method='decode', mutable=mutable)
    return logits.at[..., vocab.EOS].set(-1e9), mut


def decode_inputs(config, tokenizer, n, length, seed=1):
  """`n` source sentences: a middle-length batch of the eval split, or random tokens."""

  if tokenizer is not None and config.data.eval_splits:
    batches = data.make_eval_batches(config, tokenizer, config.data.eval_splits[0], batch_size=n)
    full = [b for b in batches if np.all(b['index'] >= 0)] or batches
    b = full[len(full) // 2]
    return {k: b[k] for k in ('inputs', 'inputs_segment', 'inputs_position') if k in b}
  rng = np.random.default_rng(seed)
  src = rng.integers(4, int(config.model.vocab_size), (n, length), dtype=np.int32)
  src[:, -1] = vocab.EOS
  return {'inputs': src}


def decode_call(module, params, inputs, method, cache, max_len, beam_size):
  """One timed decode call as a function of no arguments: `decoding.generate` with `method`
  over `inputs`, every sentence `max_len` tokens long (`FixedLength`), cached or uncached;
  returns the tokens on the host."""
  # The adapter hides the model from generate, so it gets the model in decoding's form here.
  module, params = decoding.unrolled(module, params)
  adapter = FixedLength(module, cached=(cache == 'cached'))
  return lambda: decoding.generate(
    adapter, params, inputs, method=method, beam_size=beam_size, max_len=max_len
  )


def measure_decode(module, params, inputs, methods, caches, max_len, beam_size, repeats):
  """{'{method}_{cached|uncached}': {sentences_per_s, tokens_per_s, compile_s, seconds}}.

  Variants are timed round-robin (each repeat runs every variant once), so a change in the
  machine's load hits them all alike and the speed-ups stay comparable.
  """

  runs = {
    f'{method}_{cache}': decode_call(module, params, inputs, method, cache, max_len, beam_size)
    for cache in caches
    for method in methods
  }
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


# ============================================================================= machine


def machine_info():

  dev = jax.devices()[0]
  kind = dev.device_kind
  desc = (
    f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores'
    if dev.platform == 'cpu'
    else kind
  )
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  malloc = 'huge pages' if cli.HUGE_PAGE_TUNABLE in tunables else 'default'
  return {
    'platform': dev.platform,
    'device_kind': kind,
    'num_devices': jax.device_count(),
    'cpu_count': os.cpu_count(),
    'jax': jax.__version__,
    'glibc_tunables': tunables,
    'description': (
      f'{desc}, {jax.device_count()} {dev.platform} device(s), jax {jax.__version__}, '
      f'malloc {malloc}'
    ),
  }

"""Where a compiled step's time goes: XLA op time from a profiler trace, grouped by model part.

`trace_steps(run_step, steps, out_dir)` records `steps` calls under `jax.profiler` (which writes a
Chrome trace, `*.trace.json.gz`, next to the xplane). `breakdown(trace_path, hlo_text)` reads every
op event whose name is an instruction of the compiled module and adds its duration to a category
taken from the instruction's `op_name` metadata (the JAX/Flax call path), split into matmuls
(`dot`) and everything else. Times are summed over all compute threads, so shares are shares of
busy op time, not of wall-clock time.

  python -m launch.benchmark --config=configs/multi30k.py:size=small --config.batch_size=32 \
      --decode= --profile
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

# (category, regex on the op_name metadata); the first match wins.
CATEGORIES = (
  ('dropout bits', r'threefry|random_bits|bernoulli|_uniform|rbg'),
  (
    'output + loss',
    r'embed\.attend|softmax_cross|logsumexp|cross_entropy|jvp\(\)/|'
    r'transpose\(jvp\(\)\)',
  ),
  ('scan stacking', r'dynamic_update_slice|dynamic_slice'),
  ('attention', r'attn'),
  ('feed-forward', r'ffn'),
  ('layer norm', r'norm'),
  ('embedding', r'embed'),
  ('optimizer', r'adam|clip|optax|global_norm|scale_by|apply_updates|tree_map|update'),
)
_DOT = re.compile(r'(ynn_fusion|dot|convolution|cublas|gemm|custom-call|.*matmul)')


# Control flow: the trace's event for one of these spans the ops of its body or branches, which
# have events of their own; counting both would count the body twice.
_CONTROL_FLOW = re.compile(r'(while|conditional|call)(\.\d+)?$')


def op_names(hlo_text: str) -> dict:
  """instruction name -> op_name metadata ('' when it has none), for every instruction but
  control flow (while, conditional, call), whose time is that of the ops inside it."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = ', line)
    if m and not _CONTROL_FLOW.match(m.group(1)):
      meta = re.search(r'op_name="([^"]*)"', line)
      out[m.group(1)] = meta.group(1) if meta else ''
  return out


def category(instruction: str, op_name: str) -> str:
  kind = 'dot' if _DOT.match(instruction) else 'other'
  for name, pattern in CATEGORIES:
    if re.search(pattern, op_name):
      return f'{name} ({kind})'
  if re.match(r'(copy|transpose)', instruction):
    return 'layout copies'
  return f'rest ({kind})'


def breakdown(trace_path: str, hlo_text: str) -> dict:
  """{category: seconds of op time} from a Chrome trace of the module's executions."""
  names = op_names(hlo_text)
  with gzip.open(trace_path, 'rt') as f:
    data = json.load(f)
  events = data['traceEvents'] if isinstance(data, dict) else data
  out = collections.Counter()
  for e in events:
    if e.get('ph') != 'X' or e.get('name') not in names:
      continue
    out[category(e['name'], names[e['name']])] += e['dur'] * 1e-6
  return dict(out)


def trace_steps(run_step, steps: int, out_dir: str) -> str:
  """Call `run_step()` `steps` times under the profiler; the path of the trace it wrote."""
  import jax  # pylint: disable=import-outside-toplevel

  os.makedirs(out_dir, exist_ok=True)
  before = set(glob.glob(os.path.join(out_dir, '**', '*.trace.json.gz'), recursive=True))
  with jax.profiler.trace(out_dir):
    for _ in range(steps):
      jax.block_until_ready(run_step())
  new = set(glob.glob(os.path.join(out_dir, '**', '*.trace.json.gz'), recursive=True)) - before
  if not new:
    raise RuntimeError(f'jax.profiler wrote no *.trace.json.gz under {out_dir}')
  return max(new, key=os.path.getmtime)


def shares(seconds: dict) -> dict:
  total = sum(seconds.values()) or 1.0
  return {k: v / total for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}

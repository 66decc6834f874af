r"""One prepared GPU check (about 8 minutes on one H100/H200): install, tests, benchmarks, summary.

  python -m launch.gpu_check --out=DIR            # on the GPU machine, from the repository root
  python -m launch.gpu_check --out=DIR --dry_run  # on CPU: tiny sizes, every stage wired (a test)

Stages, each a subprocess with its own time limit (a stage that fails or runs out of time is
recorded and the next one still runs; all of them share `--budget_s`):
1. install: `pip install -e '.[gpu]'` (jax[cuda12]; skipped with --dry_run or --noinstall;
   `--retries 0` so an offline machine fails in seconds and the check goes on with its own jax);
2. tests on the GPU backend (f32 references at `JAX_DEFAULT_MATMUL_PRECISION=highest`, since
   XLA's default on NVIDIA is TF32): tests/model/test_attention_impl.py (bf16 vs f32, xla vs
   einsum vs cuDNN kernels, cuDNN's config errors), tests/model/test_decoding.py (beam ==
   exhaustive search, beam 1 == greedy, cached == full forward), tests/model/test_attention.py;
   then sharding on 8 simulated CPU devices: tests/train/test_trainer.py -k "mesh or accumulation"
   (2x2x2 mesh == one device; one GPU cannot hold a mesh, so the GPU sharding path is the
   benchmark's 1-device mesh jit);
3. benchmarks through launch.benchmark, configs/multi30k.py size=small and size=base, bf16,
   synthetic full rows of 64 tokens (no data files needed), `model.attention_impl` xla vs cudnn
   (base also at 512 rows, where MFU has room to rise), train tokens/s + MFU against the chip's
   bf16 dense peak (train/metrics.py: 989 TFLOP/s for H100 SXM and H200), greedy and beam-4
   cached decode of 64 sentences x 32 tokens;
4. summary: summary.md (tables) and summary.json (every stage's command, rc, seconds, result).
Files under --out (at most 7, one level): summary.md, summary.json, bench_small.json,
bench_base.json, install.log, tests.log, bench.log.

On this workplace's device machine (an offline image with its own jax 0.11.2 and CUDA): first,
here, `python -m launch.gpu_wheels --dest=.whl` (wheels of the 16 packages the image lacks, ~11
MiB; `.whl/` is in .gitignore), then the device tool's `run` with
`carry=[".whl"]`, from the repo root, results back from $OUT:

  export PYTHONUNBUFFERED=1 ATTNLAB_BUILD_DIR=/tmp/attnlab; python3 -m pip install -q --no-index \
    --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && \
    python3 -m launch.gpu_check --out=$OUT --budget_s=470 --noinstall

(the summary records which jax ran). Checked on CPU on 2026-12-07 in a Python 3.12 environment
with the image's packages and jax 0.11.2: the dry run and the check's test lists pass there. On
any other H100/H200 machine with network: `python -m launch.gpu_check --out=gpu_results`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GPU_TESTS = [
  'tests/model/test_attention_impl.py',
  'tests/model/test_decoding.py',
  'tests/model/test_attention.py',
]
GPU_TEST_WORKERS = 4  # pytest-xdist workers for GPU_TESTS (the machines have 16 CPU cores)
SHARDING_TESTS = ['tests/train/test_trainer.py', '-k', 'mesh or accumulation']
DRY_TESTS = ['tests/model/test_attention_impl.py', '-k', 'rejects']
# size -> launch.benchmark --sweep (most important setting first: a stage cut short keeps it).
SWEEPS = {
  'small': 'model.attention_impl=cudnn;model.attention_impl=xla',
  'base': (
    'model.attention_impl=cudnn;model.attention_impl=xla;'
    'model.attention_impl=cudnn,batch_size=512;model.attention_impl=xla,batch_size=512'
  ),
}
BENCH_ARGS = [
  '--data=synthetic',
  '--synthetic_len=64',
  '--steps=20',
  '--decode=greedy,beam',
  '--cache=cached',
  '--decode_batch=64',
  '--decode_len=32',
  '--decode_repeats=3',
  '--config.model.dtype=bfloat16',
]
# --dry_run: the same stages on a shrunken model, f32-only kernels (cuDNN needs a GPU).
DRY_SWEEP = 'model.attention_impl=xla;model.attention_impl=einsum'
DRY_BENCH_ARGS = [
  '--compile_cache',  # both sizes are the same tiny model in a dry run: compile it once
  '--data=synthetic',
  '--synthetic_len=8',
  '--steps=1',
  '--decode=beam',
  '--cache=cached',
  '--decode_batch=2',
  '--decode_len=4',
  '--decode_repeats=1',
  '--config.model.dtype=bfloat16',
  '--config.model.d_model=32',
  '--config.model.d_ff=64',
  '--config.model.num_layers=1',
  '--config.model.num_heads=2',
  '--config.data.vocab_size=64',
  '--config.batch_size=4',
]
STAGE_LIMIT_S = {
  'install': 200,
  'tests_gpu': 150,
  'tests_sharding': 90,
  'bench_small': 120,
  'bench_base': 240,
}


def define_flags():
  flags.DEFINE_string('out', None, 'Output directory (created).')
  flags.DEFINE_bool('dry_run', False, 'CPU: no install, tiny sizes, few steps, minimal tests.')
  flags.DEFINE_bool('install', True, "pip install -e '.[gpu]' first (never with --dry_run).")
  flags.DEFINE_integer(
    'budget_s',
    None,
    'Seconds for all stages together (default 470; a dry run, whose CPU may be shared, 900).',
  )


# ============================================================================= stages


class Runner:
  """Runs stages as subprocesses under one deadline; appends their output to log files."""

  def __init__(self, out, budget_s):
    self.out, self.deadline, self.stages = out, time.monotonic() + budget_s, []

  def run(self, name, cmd, log, env=None, limit=None):
    left = self.deadline - time.monotonic()
    limit = min(limit or left, left)
    stage = {'name': name, 'command': ' '.join(shlex.quote(c) for c in cmd)}
    self.stages.append(stage)
    if limit < 5:
      stage.update(rc=None, status='skipped: out of time', seconds=0.0)
      return stage
    t0 = time.monotonic()
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    full_env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, full_env.get('PYTHONPATH')]))
    with open(os.path.join(self.out, log), 'a', encoding='utf-8') as f:
      f.write(f'\n===== {name}: {stage["command"]}\n')
      f.flush()
      try:
        proc = subprocess.run(
          cmd,
          cwd=REPO,
          env=full_env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
          timeout=limit,
          check=False,
        )
        text, rc = proc.stdout, proc.returncode
        status = 'ok' if rc == 0 else f'failed (rc {rc})'
      except subprocess.TimeoutExpired as e:
        text = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
        rc, status = None, f'timed out after {limit:.0f}s'
      f.write(text)
    stage.update(rc=rc, status=status, seconds=round(time.monotonic() - t0, 1), tail=text[-1500:])
    return stage


def pytest_counts(text):
  """{'passed': n, 'failed': n, ...} from pytest's last summary line."""
  lines = [l for l in text.splitlines() if re.search(r'\d+ (passed|failed|error)', l)]
  return (
    {
      k: int(n)
      for n, k in re.findall(r'(\d+) (passed|failed|errors?|skipped|deselected)', lines[-1])
    }
    if lines
    else {}
  )


def env_info():
  """Python, jax, devices and nvidia-smi, from a fresh interpreter (after the install)."""
  code = (
    'import json, jax; d = jax.devices()[0]; print(json.dumps({"jax": jax.__version__, '
    '"backend": jax.default_backend(), "device_kind": d.device_kind, '
    '"num_devices": jax.device_count()}))'
  )
  info = {'python': sys.version.split()[0], 'executable': sys.executable}
  try:
    proc = subprocess.run(
      [sys.executable, '-c', code],
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
      cwd=REPO,
    )
    info.update(
      json.loads(proc.stdout.strip().splitlines()[-1])
      if proc.returncode == 0
      else {'jax_error': proc.stderr[-800:]}
    )
  except (subprocess.TimeoutExpired, IndexError, ValueError) as e:
    info['jax_error'] = repr(e)
  try:
    smi = subprocess.run(
      ['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
      capture_output=True,
      text=True,
      timeout=30,
    )
    info['nvidia_smi'] = smi.stdout.strip() or smi.stderr.strip()
  except (OSError, subprocess.TimeoutExpired) as e:
    info['nvidia_smi'] = f'unavailable: {e}'
  return info


def _install(runner, dry_run, install):
  """Stage 1: `pip install -e '.[gpu]'`, or a skipped stage (dry run, --noinstall)."""
  py = sys.executable
  if install and not dry_run:
    runner.run(
      'install',
      [py, '-m', 'pip', 'install', '--retries', '0', '--timeout', '20', '-e', '.[gpu]'],
      'install.log',
      limit=STAGE_LIMIT_S['install'],
    )
  else:
    runner.stages.append(
      {
        'name': 'install',
        'status': 'skipped (dry run)' if dry_run else 'skipped (--noinstall)',
        'rc': None,
        'seconds': 0.0,
      }
    )


def _tests(runner, dry_run):
  """Stage 2: the GPU tests and the simulated-mesh sharding tests (a dry run: DRY_TESTS on CPU);
  each test stage gets the counts of its pytest summary line."""
  py = sys.executable
  pytest = [py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-m', 'not multiprocess']
  if dry_run:
    runner.run(
      'tests_gpu', pytest + DRY_TESTS, 'tests.log', env={'JAX_PLATFORMS': 'cpu'}, limit=240
    )
  else:
    # JAX_PLATFORMS='' (set, so conftest leaves it) lets jax pick the GPU. Four pytest workers
    # share it, each taking GPU memory as needed instead of 75% of it up front: compiling
    # dominates these tests (5.5 CPU-minutes of them on 2 CPU cores under jax 0.11.2), more
    # than the stage's limit if run one after another.
    runner.run(
      'tests_gpu',
      pytest + ['-n', str(GPU_TEST_WORKERS)] + GPU_TESTS,
      'tests.log',
      limit=STAGE_LIMIT_S['tests_gpu'],
      env={
        'JAX_PLATFORMS': '',
        'XLA_FLAGS': '',
        'JAX_DEFAULT_MATMUL_PRECISION': 'highest',
        'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
      },
    )
    runner.run(
      'tests_sharding',
      pytest + SHARDING_TESTS,
      'tests.log',
      env={'JAX_PLATFORMS': 'cpu'},
      limit=STAGE_LIMIT_S['tests_sharding'],
    )
  for stage in runner.stages:
    if stage['name'].startswith('tests') and 'tail' in stage:
      stage['counts'] = pytest_counts(stage['tail'])


def _benchmarks(runner, out, dry_run):
  """Stage 3: launch.benchmark at size=small and size=base; {size: its JSON} for those written."""
  py = sys.executable
  bench = {}
  for size in ('small', 'base'):
    path = os.path.join(out, f'bench_{size}.json')
    config = f'configs/multi30k.py:size={"tiny" if dry_run else size}'
    cmd = [
      py,
      '-m',
      'launch.benchmark',
      f'--config={config}',
      f'--json={path}',
      f'--sweep={DRY_SWEEP if dry_run else SWEEPS[size]}',
    ]
    cmd += DRY_BENCH_ARGS if dry_run else BENCH_ARGS
    runner.run(
      f'bench_{size}', cmd, 'bench.log', limit=300 if dry_run else STAGE_LIMIT_S[f'bench_{size}']
    )
    if os.path.exists(path):  # written after every setting: partial runs count too
      with open(path, encoding='utf-8') as f:
        bench[size] = json.load(f)
  return bench


def _write_summary(out, summary):
  """Stage 4: out/summary.json (everything) and out/summary.md (the tables)."""
  with open(os.path.join(out, 'summary.json'), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=1, default=repr)
  with open(os.path.join(out, 'summary.md'), 'w', encoding='utf-8') as f:
    f.write(format_summary(summary) + '\n')


def check(out, dry_run=False, install=True, budget_s=None):
  """All stages; returns the summary dict (also written to out/summary.json and .md)."""
  os.makedirs(out, exist_ok=True)
  runner = Runner(out, budget_s or (900 if dry_run else 470))
  _install(runner, dry_run, install)
  info = env_info()
  _tests(runner, dry_run)
  bench = _benchmarks(runner, out, dry_run)
  summary = {
    'dry_run': dry_run,
    'env': info,
    'stages': runner.stages,
    'bench': {
      size: {
        'peak_flops_per_s': b.get('peak_flops_per_s'),
        'peak_source': b.get('peak_source'),
        'matmul_flops_per_s': b.get('matmul_flops_per_s'),
        'runs': b.get('runs', []),
      }
      for size, b in bench.items()
    },
  }
  _write_summary(out, summary)
  return summary


# ============================================================================= summary


def _f(v, spec):
  return '-' if v is None else format(v, spec)


def format_summary(s):
  e = s['env']
  lines = [
    f'# GPU check{" (dry run, CPU)" if s["dry_run"] else ""}',
    '',
    f'{e.get("nvidia_smi", "-")} | jax {e.get("jax", "?")} on {e.get("backend", "?")} '
    f'({e.get("device_kind", "?")}, {e.get("num_devices", "?")} device(s)) | '
    f'python {e["python"]}',
    '',
    '| stage | status | s | tests |',
    '|---|---|---|---|',
  ]
  for st in s['stages']:
    counts = ', '.join(f'{n} {k}' for k, n in st.get('counts', {}).items())
    lines.append(f'| {st["name"]} | {st["status"]} | {st["seconds"]:.0f} | {counts or "-"} |')
  for size, b in s['bench'].items():
    peak = b.get('peak_flops_per_s')
    lines += [
      '',
      f'## size={size} (peak {_f(peak and peak / 1e12, ".0f")} TFLOP/s, '
      f'{b.get("peak_source")}; measured bf16 matmul '
      f'{_f(b.get("matmul_flops_per_s") and b["matmul_flops_per_s"] / 1e12, ".0f")} '
      'TFLOP/s)',
      '',
      '| setting | params | compile s | step ms | real tok/s | MFU | exec MFU | peak mem MB '
      '| greedy sent/s | beam-4 sent/s | error |',
      '|---' * 11 + '|',
    ]
    for r in b['runs']:
      t, d = r.get('train', {}), r.get('decode', {})
      mem = t.get('peak_memory_bytes')
      lines.append(
        f'| {r["setting"]} | {_f(t.get("params") and t["params"] / 1e6, ".2f")}M | '
        f'{_f(t.get("compile_s"), ".1f")} | {_f(t.get("step_s") and 1e3 * t["step_s"], ".1f")} | '
        f'{_f(t.get("tokens_per_s"), ",.0f")} | {_f(t.get("mfu"), ".1%")} | '
        f'{_f(t.get("executed_mfu"), ".1%")} | {_f(mem and mem / 2**20, ",.0f")} | '
        f'{_f(d.get("greedy_cached", {}).get("sentences_per_s"), ",.1f")} | '
        f'{_f(d.get("beam_cached", {}).get("sentences_per_s"), ",.1f")} | '
        f'{r.get("error", "")[:200]} |'
      )
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  summary = check(FLAGS.out, FLAGS.dry_run, FLAGS.install, FLAGS.budget_s)
  print(format_summary(summary))
  bad = [
    st['name']
    for st in summary['stages']
    if st['status'] not in ('ok',) and not st['status'].startswith('skipped (')
  ]
  if bad:
    print(f'stages not ok: {bad}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['out'])
  app.run(main)

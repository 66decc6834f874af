"""train/runtime.py: --cpu_devices picks a device count that divides the batch, and really
splits the CPU into that many single-threaded devices before the backend starts."""

import json
import os
import subprocess
import sys

import pytest

from train import runtime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
  'spec, rows, cores, expected',
  [
    ('auto', 128, 2, 2),
    ('auto', 32, 16, 16),
    ('auto', 24, 16, 12),  # the largest count <= cores that divides the rows
    ('auto', 7, 4, 1),
    ('1', 128, 2, 1),
    ('4', 128, 2, 4),  # explicit: more devices than cores is allowed
  ],
)
def test_cpu_devices_for(spec, rows, cores, expected):
  assert runtime.cpu_devices_for(spec, rows, cores) == expected


def test_cpu_devices_for_refuses_bad_values():
  with pytest.raises(ValueError, match='auto or a positive integer'):
    runtime.cpu_devices_for('two', 8, 2)
  with pytest.raises(ValueError, match='auto or a positive integer'):
    runtime.cpu_devices_for('0', 8, 2)
  with pytest.raises(ValueError, match='does not divide the 6 rows'):
    runtime.cpu_devices_for('4', 6, 2)


def _probe(xla_flags, n):
  code = (
    'import json, os, time\n'
    'from train import runtime\n'
    f'changed = runtime.configure_cpu_devices({n})\n'
    'import jax, jax.numpy as jnp\n'
    'a = jnp.ones((1024, 1024)); f = jax.jit(jnp.dot); f(a, a).block_until_ready()\n'
    't, c = time.perf_counter(), time.process_time()\n'
    'for _ in range(3): f(a, a).block_until_ready()\n'
    'print(json.dumps({"changed": changed, "devices": jax.device_count(),\n'
    '  "cpu_per_wall": (time.process_time() - c) / (time.perf_counter() - t),\n'
    '  "flags": os.environ.get("XLA_FLAGS", "")}))\n'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  out = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, check=True
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_configure_splits_the_cpu_and_respects_explicit_xla_flags():
  r = _probe(None, 2)
  assert r['changed'] and r['devices'] == 2
  assert '--xla_cpu_multi_thread_eigen=false' in r['flags']
  # One thread per device: a matmul on device 0 keeps at most one core busy.
  assert r['cpu_per_wall'] < 1.3, r
  # XLA_FLAGS that already set a device count (the tests' 8 devices) are left alone.
  r = _probe('--xla_force_host_platform_device_count=3', 2)
  assert not r['changed'] and r['devices'] == 3
  assert r['flags'] == '--xla_force_host_platform_device_count=3'

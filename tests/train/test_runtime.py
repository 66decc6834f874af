"""train/runtime.py: --cpu_devices picks a device count that divides the batch, and configures
the backend for that many devices (Eigen's thread pool off) before it starts.

How fast that runs is a benchmark's business (`launch.benchmark --cpu_devices=auto` against `=1`,
README "Training throughput"), not a test's: a CPU-time ratio measured here depended on what else
the machine was doing (XLA's XNNPACK dots use a free core even with Eigen's pool off)."""

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
    'import json, os\n'
    'from train import runtime\n'
    f'changed = runtime.configure_cpu_devices({n})\n'
    'import jax, jax.numpy as jnp\n'
    'a = jnp.ones((64, 64)); out = jax.jit(jnp.dot)(a, a)\n'
    'print(json.dumps({"changed": changed, "devices": jax.device_count(),\n'
    '  "ok": bool((out == 64).all()), "flags": os.environ.get("XLA_FLAGS", "")}))\n'
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
  assert r['ok']  # the backend starts and computes with these flags
  # XLA_FLAGS that already set a device count (the tests' 8 devices) are left alone.
  r = _probe('--xla_force_host_platform_device_count=3', 2)
  assert not r['changed'] and r['devices'] == 3
  assert r['flags'] == '--xla_force_host_platform_device_count=3'

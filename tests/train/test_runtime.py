"""train/runtime.py: --cpu_devices picks a device count that divides the batch, and configures
the backend for that many devices (Eigen's thread pool off) before it starts.

How fast that runs is a benchmark's business (`launch.benchmark --cpu_devices=auto` against `=1`,
docs/performance.md), not a test's: a CPU-time ratio measured here depended on what else
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


def test_quiet_libraries_drops_library_info_and_keeps_attnlab_and_warnings(tmp_path):
  """Library INFO lines (tfds 'Load dataset info', JAX's TPU probe, Orbax) are dropped, as is
  tfds's custom-configuration notice; attnlab's own INFO lines pass even from a checkout under
  a folder named like a library, and library warnings and errors pass."""
  import logging  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  quiet = runtime.QuietLibraries()
  tfds_file = os.path.join(os.path.dirname(tfds.__file__), 'core', 'dataset_info.py')
  jax_file = os.path.join(os.path.dirname(jax.__file__), '_src', 'xla_bridge.py')
  ours = os.path.join(str(tmp_path), 'jax', 'attnlab', 'train', 'loop.py')

  def record(path, level=logging.INFO, msg='Load dataset info from /x'):
    return logging.LogRecord('absl', level, path, 1, msg, (), None)

  assert not quiet.filter(record(tfds_file))
  assert not quiet.filter(record(jax_file, msg="Unable to initialize backend 'tpu'"))
  custom = 'Using custom data configuration: LengthgenConfig(...)'
  assert not quiet.filter(record(tfds_file, logging.WARNING, custom))
  assert quiet.filter(record(tfds_file, logging.WARNING, 'Dataset is missing a split'))
  assert quiet.filter(record(jax_file, logging.ERROR, 'failed'))
  assert quiet.filter(record(ours))

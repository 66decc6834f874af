"""Process set-up shared by the CLIs: quiet library logs, the persistent compile cache,
distributed initialisation, preemption (SIGTERM) and host-side agreement between processes."""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os
import signal

from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from train.data import paths


def install_dirs(packages) -> tuple[str, ...]:
  """The packages' install directories, each ending in a separator, found without importing
  them: log filters match a record's file by these, not by a package name in its path (a
  checkout of attnlab under a folder called jax stays loud)."""
  return tuple(
    os.path.join(path, '')
    for name in packages
    for path in getattr(importlib.util.find_spec(name), 'submodule_search_locations', None) or ()
  )


class QuietLibraries(std_logging.Filter):
  """Drops INFO records from library internals (Orbax, grain, etils, tfds, JAX: 'Load dataset
  info from ...', 'Unable to initialize backend tpu'), which would bury the progress line and
  come before a one-line error, and tfds's warning that a builder uses a custom configuration
  (attnlab's builders always do). attnlab's own INFO lines and every other warning pass."""

  NOTICES = ('Using custom data configuration',)

  def __init__(self, packages=('orbax', 'grain', 'etils', 'tensorflow_datasets', 'jax')):
    super().__init__()
    self.noisy = install_dirs(packages)

  def filter(self, record):
    if not record.pathname.startswith(self.noisy):
      return True
    if record.levelno == std_logging.WARNING:
      return not str(record.msg).startswith(self.NOTICES)
    return record.levelno > std_logging.WARNING


def setup_runtime() -> None:
  """Quiet library logs; persistent XLA compilation cache (reruns and resumes skip compiles)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
  # $ATTNLAB_COMPILE_CACHE: one cache for many build dirs (the tests share one across runs).
  cache = os.environ.get('ATTNLAB_COMPILE_CACHE') or str(paths.build_dir() / 'jax_cache')
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


CPU_DEVICE_FLAG = 'xla_force_host_platform_device_count'


def cpu_devices_for(spec: str, rows: int, cores: int | None = None) -> int:
  """How many CPU devices `--cpu_devices=SPEC` asks for, given `rows` per (micro-)batch.

  auto: one per core, reduced to the largest count that divides the rows (each device takes
  an equal share of every batch); N: exactly N (rows must divide by it); 1: one device.
  """
  cores = cores or os.cpu_count() or 1
  if spec == 'auto':
    return max(d for d in range(1, cores + 1) if rows % d == 0)
  try:
    n = int(spec)
  except ValueError:
    n = 0
  if n < 1:
    raise ValueError(f'--cpu_devices={spec!r}: expected auto or a positive integer')
  if rows % n:
    raise ValueError(f'--cpu_devices={n} does not divide the {rows} rows per batch')
  return n


def define_cpu_devices_flag() -> None:
  """`--cpu_devices`, for every CLI that trains or times training (train.main, benchmark, peer)."""
  flags.DEFINE_string(
    'cpu_devices',
    'auto',
    'On CPU: auto = one single-threaded XLA device per core (the largest count that divides '
    'the rows of a micro-batch); N = that many; 1 = one device using every thread.',
  )


def use_cpu_devices(spec: str, config) -> int | None:
  """`--cpu_devices=SPEC` for `config`'s micro-batch rows, applied before the backend starts.
  Returns the device count when it changed anything, else None; ValueError for a bad SPEC."""
  rows = config.batch_size // max(int(config.optim.grad_accum_steps), 1)
  n = cpu_devices_for(spec, rows)
  return n if configure_cpu_devices(n) else None


def configure_cpu_devices(n: int) -> bool:
  """Before the backend starts: run the host CPU as `n` XLA devices with Eigen's intra-op thread
  pool off (XNNPACK's dots may still borrow an idle core).

  Data parallelism over cores instead of threads inside every op: small models' ops are too
  small to split well over threads (the Multi30K recipe trains ~1.3x faster per update on 2
  cores, docs/performance.md). XLA_FLAGS that already set a device count win (the
  tests simulate 8 devices that way); n = 1 leaves XLA's default (one device, all threads).
  Returns whether anything was changed. Only the CPU backend reads either setting.
  """
  flags_now = os.environ.get('XLA_FLAGS', '')
  if n <= 1 or CPU_DEVICE_FLAG in flags_now:
    return False
  jax.config.update('jax_num_cpu_devices', n)
  if 'xla_cpu_multi_thread_eigen' not in flags_now:
    os.environ['XLA_FLAGS'] = (flags_now + ' --xla_cpu_multi_thread_eigen=false').strip()
  return True


def maybe_initialize_distributed(
  config, *, coordinator_address=None, num_processes=None, process_id=None, auto=False
) -> None:
  """jax.distributed.initialize() when flags, config or a multi-task SLURM job ask for it."""
  explicit = coordinator_address is not None
  slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
  if not (explicit or auto or config.get('distributed') or slurm):
    return
  if jax.config.jax_platforms in (None, '', 'cpu') or 'cpu' in str(jax.config.jax_platforms):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU cross-process sums
  if explicit:
    jax.distributed.initialize(
      coordinator_address, num_processes=num_processes, process_id=process_id
    )
  else:
    jax.distributed.initialize()
  logging.info(
    'process %d of %d, %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


class Preemption:
  """SIGTERM sets a flag; the loop saves at the next step boundary and exits 0."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handler)

  def close(self):
    signal.signal(signal.SIGTERM, self._previous)

  def _handler(self, signum, frame):
    del frame
    logging.warning('signal %d received: saving a checkpoint and exiting', signum)
    self.requested = True

  def any_process(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def agreed(flag) -> bool:
  """Process 0's value of a host-side decision, so every process stops at the same step."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.array(bool(flag))))

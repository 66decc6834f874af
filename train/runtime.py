"""Process set-up shared by the CLIs: quiet library logs, the persistent compile cache,
distributed initialisation, preemption (SIGTERM) and host-side agreement between processes."""

from __future__ import annotations

import logging as std_logging
import os
import signal

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from train.data import paths


class QuietLibraries(std_logging.Filter):
  """Drops INFO records from Orbax / grain / etils internals: they would bury the progress line."""

  NOISY = (os.sep + 'orbax' + os.sep, os.sep + 'grain' + os.sep, os.sep + 'etils' + os.sep)

  def filter(self, record):
    return record.levelno >= 30 or not any(n in record.pathname for n in self.NOISY)


def setup_runtime() -> None:
  """Quiet library logs; persistent XLA compilation cache (reruns and resumes skip compiles)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
  jax.config.update('jax_compilation_cache_dir', str(paths.build_dir() / 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 2.0)


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

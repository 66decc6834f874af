"""XLA_FLAGS for the tests: N simulated CPU devices and cheap codegen.

Compiling, not running, dominates almost every test here. Backend optimisation level 0 (and no
expensive LLVM passes) cuts that by ~40% on the model tests; the legacy elemental fusion emitters
instead of the MLIR ones (xla_cpu_use_fusion_emitters=false) halve the backend compile time again
(14.4 s -> 7.7 s on a train-step + beam + greedy probe of three tiny models). Results stay within
every test's tolerance. The performance numbers come from launch/benchmark.py, which uses the
default flags.
"""

import importlib.metadata


def _jaxlib_version() -> tuple[int, ...]:
  """The installed jaxlib's (major, minor), read without importing it (XLA reads XLA_FLAGS once,
  when jax first starts a backend, so the flags must be settled before that)."""
  try:
    return tuple(int(p) for p in importlib.metadata.version('jaxlib').split('.')[:2])
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return (0, 0)


# As `jax.jit(..., compiler_options=...)` takes them, and as XLA_FLAGS spells them.
CHEAP_OPTIONS = {
  'xla_backend_optimization_level': 0,
  'xla_llvm_disable_expensive_passes': True,
}
# XLA dropped this flag by jaxlib 0.11.2 (the GPU machines' image): an unknown flag in XLA_FLAGS
# is fatal there, before any test runs. The pinned 0.10.2 has it.
if _jaxlib_version() < (0, 11):
  CHEAP_OPTIONS['xla_cpu_use_fusion_emitters'] = False
CHEAP_CODEGEN = ' '.join(f'--{k}={str(v).lower()}' for k, v in CHEAP_OPTIONS.items())


def xla_flags(devices: int) -> str:
  return f'--xla_force_host_platform_device_count={devices} {CHEAP_CODEGEN}'

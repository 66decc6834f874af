"""Shared pytest setup: 8 simulated CPU devices unless the caller chose otherwise."""

import os

from tests.xla_flags import xla_flags

os.environ.setdefault('XLA_FLAGS', xla_flags(8))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The commands the tests start run as started, without re-running themselves with huge pages
# for malloc (train.cli.exec_with_huge_pages: one more start-up each, ~1.5 s); tests/train/
# test_cli.py runs that path.
os.environ.setdefault('ATTNLAB_MALLOC', 'system')
# One persistent XLA compile cache for every test process (pytest workers and the train.main /
# evaluate subprocesses they start): the same tiny programs are compiled by many tests. Keyed by
# program, flags and jax version, so a stale entry is never used; `make clean` removes it.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('ATTNLAB_COMPILE_CACHE', os.path.join(_REPO, '.cache', 'test_jax_cache'))


def pytest_configure(config):
  del config
  from train import runtime  # pylint: disable=import-outside-toplevel  (after the env above)

  runtime.setup_runtime()  # the pytest workers use that cache too, as train.main does


def pytest_collection_modifyitems(config, items):
  """Slow tests first (stable otherwise): with pytest-xdist's load scheduling a long end-to-end
  test that starts last keeps one worker busy after the other has finished."""
  del config
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)

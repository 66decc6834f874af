"""Shared pytest setup: 8 simulated CPU devices unless the caller chose otherwise."""

import os

from tests.xla_flags import xla_flags

os.environ.setdefault('XLA_FLAGS', xla_flags(8))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

"""Config files by path: `configs/NAME.py[:ARG]` -> the module, or its `get_config(ARG)`.

The one loader of config files outside ml_collections' flag (launch.sweep and launch.benchmark
read a config's `sweep()`, word2vec reuses a Transformer config's tokenizer). JAX-free: config
files are plain modules that import no project code.
"""

from __future__ import annotations

import importlib.util
import os
import re


def split_spec(spec: str) -> tuple[str, str | None]:
  """'configs/x.py:size=tiny' -> ('configs/x.py', 'size=tiny'); like ml_collections does."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def load_module(path: str, flag: str = '--config'):
  """Imports a config file by path; a missing file names `flag` and the expected form."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'config file {path!r} does not exist; pass {flag}=configs/NAME.py[:ARG]'
    )
  name = '_attnlab_config_' + re.sub(r'\W', '_', os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(spec: str, flag: str = '--config'):
  """The ConfigDict of `path.py[:arg]`: that file's get_config(arg)."""
  path, arg = split_spec(spec)
  return load_module(path, flag).get_config(arg)

"""The peer's code, fetched at run time: flax's source distribution from the package registry,
of which only `examples/wmt/` is unpacked into the build cache, and a namespace with its
`models`, `decode` and the step functions of its `train.py` (launch/peer.py's docstring says why
train.py is compiled by name rather than imported). Nothing of it is committed here.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import types

from train.data import paths

# train.py's top-level definitions that the timed path uses (compiled from its own source).
TRAIN_PY_NAMES = (
  'TrainState',
  'rsqrt_schedule',
  'create_learning_rate_schedule',
  'compute_weighted_cross_entropy',
  'compute_weighted_accuracy',
  'compute_metrics',
  'train_step',
  'initialize_cache',
  'predict_step',
  'pad_examples',
  'tohost',
)
# train.py's local imports: models/decode are the loaded modules; the others are not needed.
LOCAL_MODULES = ('bleu', 'decode', 'input_pipeline', 'models')


class PeerUnavailable(RuntimeError):
  """The flax sdist could not be fetched or unpacked (offline, registry down, layout changed)."""


def default_peer_root():
  return os.path.join(paths.build_dir(), 'peer')


def fetch_peer(version=None, root=None, timeout=300):
  """Path of `examples/wmt` of flax `version`, downloading and unpacking it on first use."""
  import flax  # pylint: disable=import-outside-toplevel

  version = version or flax.__version__
  root = root or default_peer_root()
  dest = os.path.join(root, f'flax-{version}')
  wmt = os.path.join(dest, 'examples', 'wmt')
  if all(os.path.exists(os.path.join(wmt, f)) for f in ('models.py', 'decode.py', 'train.py')):
    return wmt
  os.makedirs(root, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=root, prefix='.fetch-') as tmp:
    cmd = [
      sys.executable,
      '-m',
      'pip',
      'download',
      '--no-deps',
      '--no-binary',
      ':all:',
      f'flax=={version}',
      '-d',
      tmp,
      '--quiet',
    ]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
      raise PeerUnavailable(f'`{" ".join(cmd)}` timed out after {timeout}s') from e
    archives = glob.glob(os.path.join(tmp, f'flax-{version}.tar.gz'))
    if proc.returncode or not archives:
      raise PeerUnavailable(
        f'`{" ".join(cmd)}` failed (rc {proc.returncode}): '
        f'{(proc.stderr or proc.stdout).strip()[-600:]}'
      )
    prefix = f'flax-{version}/examples/wmt/'
    stage = os.path.join(tmp, 'unpacked')
    with tarfile.open(archives[0]) as tar:
      members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
      if not members:
        raise PeerUnavailable(f'{os.path.basename(archives[0])} has no {prefix}')
      for m in members:  # only examples/wmt, at its path below flax-X/
        m.name = m.name[len(f'flax-{version}/') :]
      tar.extractall(stage, members=members, filter='data')
    os.makedirs(os.path.dirname(wmt), exist_ok=True)
    try:
      os.rename(os.path.join(stage, 'examples', 'wmt'), wmt)  # atomic: never half a directory
    except OSError:
      if not os.path.exists(os.path.join(wmt, 'train.py')):  # not a concurrent fetch that won
        raise
  return wmt


def _load_module(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_peer(wmt_dir):
  """Namespace with `models`, `decode` (imported from the sdist) and train.py's step functions."""
  models = _load_module('flax_wmt_models', os.path.join(wmt_dir, 'models.py'))
  decode = _load_module('flax_wmt_decode', os.path.join(wmt_dir, 'decode.py'))
  path = os.path.join(wmt_dir, 'train.py')
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), filename=path)
  ns = types.ModuleType('flax_wmt_train')
  ns.__dict__.update(models=models, decode=decode, __file__=path)
  missing = []
  for node in tree.body:  # train.py's own imports, one by one
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
      continue
    names = [a.name for a in node.names]
    if isinstance(node, ast.Import) and all(n in LOCAL_MODULES for n in names):
      continue
    try:
      exec(compile(ast.Module([node], []), path, 'exec'), ns.__dict__)  # pylint: disable=exec-used
    except ImportError as e:
      missing.append(f'{ast.unparse(node)}  ({type(e).__name__}: {e})')
  defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
  absent = [n for n in TRAIN_PY_NAMES if n not in defs]
  if absent:
    raise PeerUnavailable(f'{path} no longer defines {absent}: update launch/peer_source.py')
  exec(
    compile(ast.Module([defs[n] for n in TRAIN_PY_NAMES], []), path, 'exec'),  # pylint: disable=exec-used
    ns.__dict__,
  )
  ns.missing_imports = missing
  return ns

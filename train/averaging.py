"""Checkpoint averaging (fairseq's average_checkpoints): the mean of the last N checkpoints' params.

    python -m train.evaluate --workdir=W --checkpoint=avg_last:10 --split=test_2016_flickr

`--checkpoint=avg_last:N` (train.evaluate, train.translate, launch.plots) takes the N newest
steps in WORKDIR/checkpoints/ and averages their params element-wise (summed in float64 on the
host, then cast back to each parameter's own dtype). The result is an Orbax params checkpoint in
`WORKDIR/averaged/last{N}-{first}-{last}/params/`, with `averaged.json` beside it listing the
steps. It is written to a temporary directory and renamed, so a complete one is the only kind a
reader sees, and it is reused whenever the same steps are asked for again. It lives outside
WORKDIR/checkpoints/ on purpose: training never resumes from an average, and `latest`, `best`
and `all` never pick one.

Fewer than N checkpoints is an error that names how many exist: keep more with
`--config.keep_checkpoints=N` (the newest `keep_checkpoints` are kept, plus the best by
validation metric, which may then be one of the N). Steps come from the checkpoints that exist,
so their spacing is `checkpoint_every` (and `eval_every`: validation steps are saved too).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from train import checkpointing
from train import layout

PREFIX = 'avg_last:'
AVG_DIR = layout.AVG_DIR
INFO_FILE = layout.AVG_INFO_FILE


def parse(which: str) -> int | None:
  """N for 'avg_last:N', None for any other --checkpoint value; ValueError for a bad N."""
  if not str(which).startswith(PREFIX):
    return None
  n = str(which)[len(PREFIX) :]
  if not n.isdigit() or int(n) < 1:
    raise ValueError(
      f'--checkpoint={which!r}: N in avg_last:N must be a positive integer, e.g. avg_last:10'
    )
  return int(n)


def last_steps(workdir: str, n: int) -> list[int]:
  """The `n` newest checkpoint steps of `workdir`, ascending; ValueError if fewer exist."""
  steps = sorted(int(s) for s in checkpointing.list_steps(workdir))
  if len(steps) < n:
    raise ValueError(
      f'--checkpoint=avg_last:{n}: {workdir}/{checkpointing.CKPT_DIR} has only {len(steps)} '
      f'checkpoint(s) {steps}; train with --config.keep_checkpoints={n} (or more) to keep '
      f'the last {n}, or average fewer'
    )
  return steps[-n:]


def _is_float(dtype) -> bool:
  return jnp.issubdtype(dtype, jnp.floating)  # numpy's own test says no to bfloat16


def average_trees(trees) -> dict:
  """Element-wise mean of same-structured trees of arrays, as numpy, in each leaf's dtype.

  Floating leaves are summed in float64 and divided once (so the mean of N identical trees is
  exactly that tree); other leaves (integer counters, if any) must agree and are kept as is.
  """
  total, first, count = None, None, 0
  for tree in trees:
    tree = jax.tree.map(np.asarray, tree)
    if total is None:
      first = tree
      total = jax.tree.map(lambda x: x.astype(np.float64) if _is_float(x.dtype) else x, tree)
    else:

      def add(acc, x, ref):
        if x.shape != ref.shape or x.dtype != ref.dtype:
          raise ValueError(
            f'cannot average arrays of {x.shape} {x.dtype} and {ref.shape} {ref.dtype}'
          )
        if _is_float(ref.dtype):
          return acc + x.astype(np.float64)
        if not np.array_equal(x, ref):
          raise ValueError(f'cannot average differing non-float arrays ({ref.dtype})')
        return acc

      total = jax.tree.map(add, total, tree, first)
    count += 1
  if not count:
    raise ValueError('nothing to average')
  return jax.tree.map(
    lambda acc, ref: (acc / count).astype(ref.dtype) if _is_float(ref.dtype) else acc, total, first
  )


def average_dir(workdir: str, steps) -> str:
  steps = sorted(int(s) for s in steps)
  return os.path.join(workdir, AVG_DIR, f'last{len(steps)}-{steps[0]}-{steps[-1]}')


def _complete(path: str, steps) -> bool:
  try:
    with open(os.path.join(path, INFO_FILE)) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return False
  return info.get('steps') == sorted(int(s) for s in steps) and os.path.isdir(
    os.path.join(path, 'params')
  )


def read_params(path: str):
  """Params of an averaged checkpoint directory on the first local device (like
  checkpointing.restore_params)."""
  ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
  path = os.path.abspath(path)  # Orbax finds no item metadata under a relative path
  meta = ckptr.metadata(os.path.join(path, 'params')).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
  return ckptr.restore(os.path.join(path, 'params'), ocp.args.StandardRestore(target))


def write_average(workdir: str, steps, params) -> str:
  """Writes `params` (the mean of `steps`) as WORKDIR/averaged/last{N}-{first}-{last}/,
  through a temporary directory renamed into place. Returns the directory."""
  steps = sorted(int(s) for s in steps)
  final = average_dir(workdir, steps)
  root = os.path.dirname(final)
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=root, prefix=f'.tmp-{os.path.basename(final)}-')
  try:
    ocp.Checkpointer(ocp.StandardCheckpointHandler()).save(
      os.path.join(os.path.abspath(tmp), 'params'), ocp.args.StandardSave(params)
    )
    info = {
      'steps': steps,
      'checkpoint': f'{PREFIX}{len(steps)}',
      'source': os.path.join(os.path.abspath(workdir), checkpointing.CKPT_DIR),
      'method': 'element-wise mean of params (float64 sum, cast to each dtype)',
    }
    layout.write_json(os.path.join(tmp, INFO_FILE), info, sort_keys=False)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; results are shared
    if os.path.isdir(final) and not _complete(final, steps):
      shutil.rmtree(final)  # stale or partial (e.g. other steps, same name)
    try:
      os.rename(tmp, final)
    except OSError:
      if not _complete(final, steps):  # another evaluator finished first: use its copy
        raise
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
  return final


def averaged_params(workdir: str, steps, config=None):
  """Params averaged over checkpoint `steps` of `workdir`, on the first local device: read from
  WORKDIR/averaged/ when that average exists, else computed and written there first."""
  del config  # the checkpoints describe themselves (as in checkpointing.restore_params)
  path = average_dir(workdir, steps)
  if not _complete(path, steps):
    mean = average_trees(
      jax.device_get(checkpointing.restore_params(workdir, int(s))) for s in steps
    )
    write_average(workdir, steps, mean)
  return read_params(path)

"""The fault campaign's harness: a tiny training config, an uninterrupted reference run, fresh
workdirs, the real command lines as subprocesses, and the checks every trial shares (params equal
the reference's bit for bit; exit code, no traceback, one `error:` line). The trials themselves
are launch/fault_trials.py; launch.faults runs them all and writes the table.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40

TINY = f"""
from configs import lengthgen

def get_config(arg=None):
  c = lengthgen.get_config('size=tiny,task=reverse,train_len=6,test_len=8')
  c.total_steps, c.batch_size = {STEPS}, 16
  c.checkpoint_every, c.eval_every, c.log_every = 5, {STEPS}, 10
  c.keep_checkpoints = 10
  c.data.num_train, c.data.num_eval = 200, 16
  c.data.bucket_boundaries = ()
  c.data.max_src_len = c.data.max_tgt_len = 18
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.d_ff = 32, 2, 1, 64
  c.model.max_len = 40
  c.model.dropout = 0.1
  c.optim.schedule, c.optim.warmup_steps = 'rsqrt', 5
  c.eval.bleu_sentences = 0
  c.eval.decode = 'greedy'
  c.mesh.data = 1
  return c
"""


@dataclasses.dataclass
class Tally:
  """One fault's count: trials, survivals, trials that lost data, and the failures' notes."""

  fault: str
  trials: int = 0
  survived: int = 0
  data_lost: int = 0
  notes: list = dataclasses.field(default_factory=list)

  def add(self, ok: bool, lost: bool = False, note: str = '') -> None:
    self.trials += 1
    self.survived += bool(ok)
    self.data_lost += bool(lost)
    if note and not ok:
      self.notes.append(note[:300])


class Campaign:
  """Trials share one uninterrupted reference run; each trial gets its own workdir and adds its
  outcome to `tallies` (one Tally per fault, in the order first seen)."""

  def __init__(
    self, root: str, seed: int = 0, xla_flags: str = '--xla_force_host_platform_device_count=1'
  ):
    self.root = os.path.abspath(root)
    os.makedirs(self.root, exist_ok=True)
    self.config = os.path.join(self.root, 'tiny.py')
    with open(self.config, 'w') as f:
      f.write(TINY)
    self.env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      PYTHONPATH=REPO,
      XLA_FLAGS=xla_flags,  # one device; the tests add their cheap-codegen flags
      ATTNLAB_BUILD_DIR=os.path.join(self.root, 'build'),
    )
    self.env.pop('ATTNLAB_TRACEBACK', None)
    self.rng = random.Random(seed)
    self.tallies: dict[str, Tally] = {}
    self._n = 0
    self.reference_dir = None
    self.reference_params = None
    self.run_seconds = None

  # --- plumbing ----------------------------------------------------------------------------
  def tally(self, fault: str) -> Tally:
    return self.tallies.setdefault(fault, Tally(fault))

  def workdir(self, name: str) -> str:
    self._n += 1
    return os.path.join(self.root, f'{self._n:03d}-{name}')

  def train_cmd(self, workdir, *extra):
    return [
      sys.executable,
      '-m',
      'train.main',
      f'--config={self.config}',
      f'--workdir={workdir}',
      *extra,
    ]

  def run(self, cmd, timeout=300, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run(
      cmd, cwd=REPO, env=self.env, capture_output=True, timeout=timeout, input=stdin
    )

  def params(self, workdir, step=STEPS):
    from train import checkpointing  # pylint: disable=import-outside-toplevel

    return checkpointing.restore_params(workdir, step)

  def same_as_reference(self, workdir) -> bool:
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    try:
      got = self.params(workdir)
    except Exception:  # pylint: disable=broad-except
      return False
    leaves = zip(jax.tree.leaves(got), jax.tree.leaves(self.reference_params))
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves)

  @staticmethod
  def clean(p: subprocess.CompletedProcess, code: int) -> tuple[bool, str]:
    """Exit `code`, no traceback, and (for a failure) exactly one `error:` line."""
    err = p.stderr.decode(errors='replace')
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    ok = p.returncode == code and 'Traceback' not in err and (code == 0 or len(errors) == 1)
    return ok, f'exit {p.returncode}; ' + (errors[0] if errors else err[-300:])

  # --- the reference -------------------------------------------------------------------------
  def reference(self) -> None:
    """The uninterrupted run every trial is compared with; its duration bounds the kill moments."""
    self.reference_dir = self.workdir('reference')
    t0 = time.time()
    p = self.run(self.train_cmd(self.reference_dir))
    self.run_seconds = time.time() - t0
    if p.returncode:
      raise RuntimeError(f'reference run failed: {p.stderr.decode()[-2000:]}')
    self.reference_params = self.params(self.reference_dir)

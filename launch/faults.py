r"""Fault campaign: break a tiny training run every way the reliability issue lists, count survivals.

  python -m launch.faults --out=runs/faults [--kill9=20] [--sigterm=5] [--seed=0]

Every trial runs the real command lines (`train.main`, `train.evaluate`, `train.translate`,
`train.data.prepare`) as subprocesses on a tiny length-generalisation config (40 steps, a
checkpoint every 5) and checks the outcome the README promises:
- kill -9 / SIGTERM at a random moment, then the same command again: the final params equal an
  uninterrupted run's, bit for bit (SIGTERM must also exit 0).
- one checkpoint item (params, optimizer state, data state, metadata) of the newest step
  truncated or deleted: training resumes from the previous step and ends bit-identical;
  evaluate and translate fall back too, with one warning line.
- a full disk during a save (simulated: the third save raises ENOSPC): one error line, exit 1,
  the previous checkpoints restore, and a rerun ends bit-identical.
- a read-only workdir: one error line, exit 1 (skipped as root, which ignores permissions).
- `train.evaluate --checkpoint=all` in a loop while training saves: never a failure.
- bad input files (empty, non-UTF-8, CRLF, a 10,000-token line, mismatched line counts, a
  missing file) for training data, evaluate and translate: one-line errors or warnings, the
  documented exit code, never a traceback; translate keeps N lines in, N lines out.

"survived": the outcome was the promised one. "data lost": trials after which a checkpoint that
had been complete could no longer be restored, or the final params differed. The table is
printed and written to OUT/faults.md and OUT/faults.json (atomically).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from absl import flags

from train import layout

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

# The third checkpoint save fails as a full disk would; everything else is the real train.main.
FULL_DISK_SHIM = """
import errno, runpy, sys
from train import checkpointing
real, calls = checkpointing.Checkpointer.save, [0]
def save(self, *a, **k):
  calls[0] += 1
  if calls[0] == 3:
    raise OSError(errno.ENOSPC, 'No space left on device (simulated, during a checkpoint save)')
  return real(self, *a, **k)
checkpointing.Checkpointer.save = save
sys.argv = ['train.main'] + sys.argv[1:]
runpy.run_module('train.main', run_name='__main__')
"""


@dataclasses.dataclass
class Tally:
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
  """Trials share one uninterrupted reference run; each trial gets its own workdir."""

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
    self.reference_dir = self.workdir('reference')
    t0 = time.time()
    p = self.run(self.train_cmd(self.reference_dir))
    self.run_seconds = time.time() - t0
    if p.returncode:
      raise RuntimeError(f'reference run failed: {p.stderr.decode()[-2000:]}')
    self.reference_params = self.params(self.reference_dir)

  # --- signals -----------------------------------------------------------------------------
  def signal_trial(self, sig: int) -> None:
    name = 'kill -9 at a random moment' if sig == signal.SIGKILL else 'SIGTERM at a random moment'
    w = self.workdir('kill9' if sig == signal.SIGKILL else 'sigterm')
    proc = subprocess.Popen(
      self.train_cmd(w),
      cwd=REPO,
      env=self.env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
    )
    time.sleep(self.rng.uniform(0.3, self.run_seconds))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    exited_ok = sig == signal.SIGKILL or proc.returncode in (0, None) or proc.returncode == -sig
    if sig == signal.SIGTERM and proc.returncode not in (0, -signal.SIGTERM):
      exited_ok = False
    p = self.run(self.train_cmd(w))
    same = p.returncode == 0 and self.same_as_reference(w)
    self.tally(name).add(
      exited_ok and same,
      lost=not same,
      note=f'first exit {proc.returncode}, resume exit {p.returncode}: '
      + (err or b'').decode(errors='replace')[-200:],
    )

  # --- broken checkpoint items -----------------------------------------------------------
  def _broken_copy(self, item: str, how: str) -> str:
    w = self.workdir(f'broken-{item}-{how}')
    shutil.copytree(self.reference_dir, w)
    step = os.path.join(w, 'checkpoints', str(STEPS))
    target = os.path.join(step, item)
    paths = (
      [target]
      if os.path.isfile(target)
      else [os.path.join(d, f) for d, _, fs in os.walk(target) for f in fs]
    )
    for path in paths:
      if how == 'deleted':
        os.remove(path)
      else:
        with open(path, 'r+b') as f:
          f.truncate(max(os.path.getsize(path) // 3, 1) if os.path.getsize(path) > 1 else 0)
    return w

  ITEMS = {
    'params': 'params',
    'optimizer state': 'train',
    'data state': 'data',
    'metadata': '_CHECKPOINT_METADATA',
  }

  def checkpoint_item_trials(self, cases=None) -> None:
    """`cases`: (label, how) pairs; default every item of ITEMS, truncated and deleted."""
    cases = cases or [(label, how) for label in self.ITEMS for how in ('truncated', 'deleted')]
    for label, how in cases:
      item = self.ITEMS[label]
      # train: resumes from an earlier good step and retrains to the same params.
      w = self._broken_copy(item, how)
      p = self.run(self.train_cmd(w))
      ok, note = self.clean(p, 0)
      same = ok and self.same_as_reference(w)
      self.tally(f'newest checkpoint {label} {how}: train').add(same, lost=not same, note=note)
      # evaluate and translate on a fresh broken copy: fall back (or use the intact params).
      w = self._broken_copy(item, how)
      p = self.run([sys.executable, '-m', 'train.evaluate', f'--workdir={w}', '--split=test'])
      ok, note = self.clean(p, 0)
      self.tally(f'newest checkpoint {label} {how}: evaluate').add(ok, note=note)
      p = self.run([sys.executable, '-m', 'train.translate', f'--workdir={w}'], stdin=b'abc\n')
      ok, note = self.clean(p, 0)
      ok = ok and len(p.stdout.decode().splitlines()) == 1
      self.tally(f'newest checkpoint {label} {how}: translate').add(ok, note=note)

  # --- disk -----------------------------------------------------------------------------------
  def full_disk_trial(self) -> None:
    w = self.workdir('full-disk')
    p = self.run(
      [sys.executable, '-c', FULL_DISK_SHIM, f'--config={self.config}', f'--workdir={w}']
    )
    ok, note = self.clean(p, 1)
    ok = ok and 'No space left' in p.stderr.decode()
    from train import checkpointing, restore  # pylint: disable=import-outside-toplevel

    steps = checkpointing.list_steps(w)
    restorable = bool(steps) and restore.restorable_steps(w) == steps
    again = self.run(self.train_cmd(w))
    same = again.returncode == 0 and self.same_as_reference(w)
    self.tally('full disk during a save').add(
      ok and restorable and same, lost=not (restorable and same), note=note
    )

  def read_only_trial(self) -> None:
    tally = self.tally('read-only workdir')
    if os.geteuid() == 0:
      tally.notes.append('skipped: running as root, which ignores file permissions')
      return
    w = self.workdir('read-only')
    shutil.copytree(self.reference_dir, w)
    for d, _, fs in os.walk(w):
      for name in fs + ['.']:
        os.chmod(os.path.join(d, name), 0o555 if name == '.' else 0o444)
    try:
      p = self.run(self.train_cmd(w, '--config.total_steps=45'))
      ok, note = self.clean(p, 1)
      tally.add(ok, note=note)
    finally:
      for d, _, fs in os.walk(w):
        for name in fs + ['.']:
          os.chmod(os.path.join(d, name), 0o755)

  # --- a reader while training saves --------------------------------------------------------
  def concurrent_evaluate_trial(self, steps: int = 200) -> None:
    """Training runs `steps` steps (a save every 5) while evaluate --checkpoint=all loops."""
    w = self.workdir('concurrent')
    proc = subprocess.Popen(
      self.train_cmd(w, f'--config.total_steps={steps}'),
      cwd=REPO,
      env=self.env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
    tally = self.tally('evaluate --checkpoint=all while training saves')
    while proc.poll() is None:
      if not os.path.isdir(os.path.join(w, 'checkpoints')):
        time.sleep(0.2)
        continue
      p = self.run(
        [
          sys.executable,
          '-m',
          'train.evaluate',
          f'--workdir={w}',
          '--split=test',
          '--checkpoint=all',
        ]
      )
      ok, note = self.clean(p, 0)
      if not ok and 'no checkpoints' in note:
        continue  # before the first save: nothing to read yet
      tally.add(ok, note=note)
    proc.wait()

  # --- bad input files ---------------------------------------------------------------------
  def bad_input_trials(self) -> None:
    d = os.path.join(self.root, 'inputs')
    os.makedirs(d, exist_ok=True)
    files = {
      'empty': b'',
      'non-UTF-8': b'abc\n\xff\xfe\nxyz\n',
      'CRLF': b'abc\r\nxyz\r\n',
      '10,000-token line': (' '.join(['a'] * 10_000) + '\nxyz\n').encode(),
    }
    for name, body in files.items():
      path = os.path.join(d, name.replace(' ', '_').replace(',', '') + '.txt')
      with open(path, 'wb') as f:
        f.write(body)
      lines = body.count(b'\n')
      p = self.run(
        [
          sys.executable,
          '-m',
          'train.translate',
          f'--workdir={self.reference_dir}',
          f'--input={path}',
        ]
      )
      ok, note = self.clean(p, 0)
      ok = ok and len(p.stdout.decode().split('\n')[:-1]) == lines
      self.tally(f'translate: {name} input').add(ok, note=note)
      want = 1 if name in ('non-UTF-8', 'empty') else 0  # nothing to score is an error
      p = self.run(
        [
          sys.executable,
          '-m',
          'train.evaluate',
          f'--workdir={self.reference_dir}',
          f'--source_file={path}',
          f'--reference_file={path}',
          '--output=' + os.path.join(d, 'out-{step}.json'),
        ]
      )
      ok, note = self.clean(p, want)
      self.tally(f'evaluate: {name} source + reference').add(ok, note=note)
    short = os.path.join(d, 'short.txt')
    with open(short, 'w') as f:
      f.write('abc\n')
    p = self.run(
      [
        sys.executable,
        '-m',
        'train.evaluate',
        f'--workdir={self.reference_dir}',
        f'--source_file={os.path.join(d, "CRLF.txt")}',
        f'--reference_file={short}',
      ]
    )
    ok, note = self.clean(p, 1)
    self.tally('evaluate: mismatched line counts').add(ok and 'line' in note, note=note)
    for cli in ('train.evaluate', 'train.translate'):
      flag = '--source_file' if cli == 'train.evaluate' else '--input'
      p = self.run(
        [sys.executable, '-m', cli, f'--workdir={self.reference_dir}', f'{flag}={d}/missing.txt']
      )
      ok, note = self.clean(p, 1)
      self.tally(f'{cli.split(".")[1]}: missing file').add(ok, note=note)
    self.training_data_trials()

  def training_data_trials(self) -> None:
    """Multi30K raw files that are broken in each way, built by train.data.prepare."""
    good = [f'a sentence number {i} .' for i in range(6)]
    cases = {
      'empty train file': {'train.en.gz': b''},
      'non-UTF-8 line': {
        'train.en.gz': ('\n'.join(good[:3]) + '\n').encode()
        + b'\xff\xfe\n'
        + ('\n'.join(good[4:]) + '\n').encode()
      },
      'CRLF line endings': {'train.en.gz': ''.join(s + '\r\n' for s in good).encode()},
      '10,000-token line': {
        'train.en.gz': ('\n'.join(good[:5] + [' '.join(['w'] * 10_000)]) + '\n').encode()
      },
      'mismatched line counts': {'train.en.gz': ('\n'.join(good[:4]) + '\n').encode()},
      'missing split file': {'train.en.gz': None},
    }
    expect = {'empty train file': 1, 'mismatched line counts': 1, 'missing split file': 1}
    for name, override in cases.items():
      root = os.path.join(self.root, 'data', name.replace(' ', '_').replace(',', ''))
      m = os.path.join(root, 'multi30k')
      os.makedirs(m, exist_ok=True)
      for prefix in ('train', 'val', 'test_2016_flickr'):
        for lang in ('en', 'de'):
          fname = f'{prefix}.{lang}.gz'
          body = override.get(fname, ('\n'.join(good) + '\n').encode())
          path = os.path.join(m, fname)
          if body is None:
            continue
          with gzip.open(path, 'wb') as f:
            f.write(body)
      env_cmd = [
        sys.executable,
        '-m',
        'train.data.prepare',
        '--config=configs/multi30k.py',
        f'--config.data.data_dir={root}',
        '--config.data.vocab_size=40',
        '--config.data.tokenizer=char',
      ]
      p = subprocess.run(
        env_cmd,
        cwd=REPO,
        capture_output=True,
        timeout=300,
        env=dict(self.env, ATTNLAB_BUILD_DIR=os.path.join(root, 'build')),
      )
      ok, note = self.clean(p, expect.get(name, 0))
      self.tally(f'training data: {name}').add(ok, note=note)

  # --- all ---------------------------------------------------------------------------------
  def run_all(self, kill9: int, sigterm: int) -> list[Tally]:
    self.reference()
    for _ in range(kill9):
      self.signal_trial(signal.SIGKILL)
    for _ in range(sigterm):
      self.signal_trial(signal.SIGTERM)
    self.checkpoint_item_trials()
    self.full_disk_trial()
    self.read_only_trial()
    self.concurrent_evaluate_trial()
    self.bad_input_trials()
    return list(self.tallies.values())


def markdown(tallies, seconds: float) -> str:
  lines = ['| fault | trials | survived | data lost |', '|---|---|---|---|']
  for t in tallies:
    note = f' ({t.notes[0]})' if t.notes and not t.trials else ''
    lines.append(f'| {t.fault}{note} | {t.trials} | {t.survived} | {t.data_lost} |')
  failures = [f'- {t.fault}: {n}' for t in tallies for n in t.notes if t.trials]
  total = sum(t.trials for t in tallies)
  ok = sum(t.survived for t in tallies)
  lines += ['', f'{ok} of {total} trials survived, in {seconds / 60:.1f} min.']
  if failures:
    lines += ['', 'Failures:'] + failures
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  from train import runtime  # pylint: disable=import-outside-toplevel

  runtime.setup_runtime()  # this process restores checkpoints too: keep Orbax's INFO out
  f = flags.FLAGS
  start = time.time()
  campaign = Campaign(f.out, f.seed)
  tallies = campaign.run_all(f.kill9, f.sigterm)
  text = markdown(tallies, time.time() - start)
  print(text)
  layout.write_text(os.path.join(f.out, 'faults.md'), text)
  layout.write_json(os.path.join(f.out, 'faults.json'), [dataclasses.asdict(t) for t in tallies])
  return 0 if all(t.survived == t.trials for t in tallies) else 1


def define_flags():
  flags.DEFINE_string('out', None, 'Campaign directory (workdirs, tiny config, faults.md).')
  flags.DEFINE_integer('kill9', 20, 'kill -9 trials.')
  flags.DEFINE_integer('sigterm', 5, 'SIGTERM trials.')
  flags.DEFINE_integer('seed', 0, 'Seed of the random kill moments.')


if __name__ == '__main__':
  from train import cli  # pylint: disable=import-outside-toplevel

  cli.run(main, define_flags=define_flags, required=('out',))

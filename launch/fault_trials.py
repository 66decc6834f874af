"""The fault trials of launch.faults, one function per kind of fault, each run against a
fault_campaign.Campaign (its reference run done first) and adding its outcomes to the
campaign's tallies. Each docstring or comment says the outcome the README promises.
"""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from launch.fault_campaign import REPO, STEPS, Campaign
from train import layout

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


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------
def signal_trial(c: Campaign, sig: int) -> None:
  """kill -9 or SIGTERM at a random moment, then the same command: the final params equal the
  reference's (SIGTERM must also exit 0)."""
  name = 'kill -9 at a random moment' if sig == signal.SIGKILL else 'SIGTERM at a random moment'
  w = c.workdir('kill9' if sig == signal.SIGKILL else 'sigterm')
  proc = subprocess.Popen(
    c.train_cmd(w),
    cwd=REPO,
    env=c.env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  time.sleep(c.rng.uniform(0.3, c.run_seconds))
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  exited_ok = sig == signal.SIGKILL or proc.returncode in (0, None) or proc.returncode == -sig
  if sig == signal.SIGTERM and proc.returncode not in (0, -signal.SIGTERM):
    exited_ok = False
  p = c.run(c.train_cmd(w))
  same = p.returncode == 0 and c.same_as_reference(w)
  c.tally(name).add(
    exited_ok and same,
    lost=not same,
    note=f'first exit {proc.returncode}, resume exit {p.returncode}: '
    + (err or b'').decode(errors='replace')[-200:],
  )


# ---------------------------------------------------------------------------------------------
# Broken checkpoint items
# ---------------------------------------------------------------------------------------------
# label -> the item's file or folder inside a checkpoint step
ITEMS = {
  'params': 'params',
  'optimizer state': 'train',
  'data state': 'data',
  'metadata': '_CHECKPOINT_METADATA',
}


def _broken_copy(c: Campaign, item: str, how: str) -> str:
  """A copy of the reference workdir whose newest checkpoint has `item` truncated or deleted."""
  w = c.workdir(f'broken-{item}-{how}')
  shutil.copytree(c.reference_dir, w)
  step = os.path.join(w, layout.CKPT_DIR, str(STEPS))
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


def checkpoint_item_trials(c: Campaign, cases=None) -> None:
  """A broken item of the newest checkpoint: train resumes from the previous step and ends
  bit-identical; evaluate and translate fall back too. `cases`: (label, how) pairs; default
  every item of ITEMS, truncated and deleted."""
  cases = cases or [(label, how) for label in ITEMS for how in ('truncated', 'deleted')]
  for label, how in cases:
    item = ITEMS[label]
    # train: resumes from an earlier good step and retrains to the same params.
    w = _broken_copy(c, item, how)
    p = c.run(c.train_cmd(w))
    ok, note = c.clean(p, 0)
    same = ok and c.same_as_reference(w)
    c.tally(f'newest checkpoint {label} {how}: train').add(same, lost=not same, note=note)
    # evaluate and translate on a fresh broken copy: fall back (or use the intact params).
    w = _broken_copy(c, item, how)
    p = c.run([sys.executable, '-m', 'train.evaluate', f'--workdir={w}', '--split=test'])
    ok, note = c.clean(p, 0)
    c.tally(f'newest checkpoint {label} {how}: evaluate').add(ok, note=note)
    p = c.run([sys.executable, '-m', 'train.translate', f'--workdir={w}'], stdin=b'abc\n')
    ok, note = c.clean(p, 0)
    ok = ok and len(p.stdout.decode().splitlines()) == 1
    c.tally(f'newest checkpoint {label} {how}: translate').add(ok, note=note)


# ---------------------------------------------------------------------------------------------
# Disk and permissions
# ---------------------------------------------------------------------------------------------
def full_disk_trial(c: Campaign) -> None:
  """The third save raises ENOSPC: one error line, exit 1, the previous checkpoints restore, and
  a rerun ends bit-identical."""
  w = c.workdir('full-disk')
  p = c.run([sys.executable, '-c', FULL_DISK_SHIM, f'--config={c.config}', f'--workdir={w}'])
  ok, note = c.clean(p, 1)
  ok = ok and 'No space left' in p.stderr.decode()
  _after_full_disk(c, c.tally('full disk during a save'), w, ok, note)


def _after_full_disk(c: Campaign, tally, w: str, ok: bool, note: str) -> None:
  """What every full-disk trial checks after the failed run: every listed step restores, and
  a rerun in `w` ends bit-identical to the reference."""
  from train import checkpointing, restore  # pylint: disable=import-outside-toplevel

  steps = checkpointing.list_steps(w) if os.path.isdir(w) else []
  restorable = bool(steps) and restore.restorable_steps(w) == steps
  again = c.run(c.train_cmd(w))
  same = again.returncode == 0 and c.same_as_reference(w)
  tally.add(ok and restorable and same, lost=not (restorable and same), note=note)


def _kilobytes(path: str) -> int:
  """Disk usage of a file tree in KiB, counted in 4 KiB pages as tmpfs counts it."""
  pages = 0
  for d, _, fs in os.walk(path):
    pages += 1 + sum(-(-os.path.getsize(os.path.join(d, f)) // 4096) for f in fs)
  return 4 * pages


def full_disk_tmpfs_trial(c: Campaign) -> None:
  """A real full disk: the workdir is a tmpfs with room for about two and a half checkpoints, so
  a later save runs out of space partway through its writes. One error line naming the step and
  the intact steps, exit 1; every listed step restores; the workdir, copied to a real disk,
  resumes bit-identical. Needs root and unshare(1) (a private mount namespace)."""
  tally = c.tally('full disk during a save (a real tmpfs)')
  if read_only_method() != 'mount':
    tally.notes.append('skipped: needs root and a usable unshare(1) to mount a small tmpfs')
    return
  from train import checkpointing  # pylint: disable=import-outside-toplevel

  ref, ckpts = c.reference_dir, os.path.join(c.reference_dir, layout.CKPT_DIR)
  first = os.path.join(ckpts, str(checkpointing.list_steps(ref)[0]))
  size_kb = _kilobytes(ref) - _kilobytes(ckpts) + 5 * _kilobytes(first) // 2
  w = c.workdir('full-disk-tmpfs')
  after = w + '-copied'
  os.makedirs(w)
  q = shlex.quote
  script = (
    f'mount -t tmpfs -o size={size_kb}k attnlab-full {q(w)} && '
    f'{{ {shlex.join(c.train_cmd(w))}; rc=$?; cp -a {q(w)} {q(after)}; exit $rc; }}'
  )
  p = c.run(['unshare', '--mount', '--', 'sh', '-c', script])
  ok, note = c.clean(p, 1)
  ok = ok and 'no space left on device' in p.stderr.decode()
  _after_full_disk(c, tally, after, ok, f'{size_kb} KiB: {note}')


def read_only_method() -> str | None:
  """How this process can make a workdir read-only: 'chmod' (not root), 'mount' (root, which
  ignores file permissions: a read-only bind mount in a private mount namespace, which binds root
  too), or None (root where unshare(1) is missing or not permitted)."""
  if os.geteuid() != 0:
    return 'chmod'
  if not shutil.which('unshare'):
    return None
  probe = subprocess.run(['unshare', '--mount', '--', 'true'], capture_output=True)
  return 'mount' if probe.returncode == 0 else None


def read_only_trial(c: Campaign) -> None:
  """Training in a read-only workdir: one error line, exit 1."""
  tally = c.tally('read-only workdir')
  method = read_only_method()
  if method is None:
    tally.notes.append('skipped: running as root without a usable unshare(1)')
    return
  w = c.workdir('read-only')
  shutil.copytree(c.reference_dir, w)
  cmd = c.train_cmd(w, '--config.total_steps=45')
  if method == 'mount':
    q = shlex.quote(w)
    script = f'mount --bind {q} {q} && mount -o remount,ro,bind {q} && exec {shlex.join(cmd)}'
    ok, note = c.clean(c.run(['unshare', '--mount', '--', 'sh', '-c', script]), 1)
    tally.add(ok, note=note)
    return
  for d, _, fs in os.walk(w):
    for name in fs + ['.']:
      os.chmod(os.path.join(d, name), 0o555 if name == '.' else 0o444)
  try:
    ok, note = c.clean(c.run(cmd), 1)
    tally.add(ok, note=note)
  finally:
    for d, _, fs in os.walk(w):
      for name in fs + ['.']:
        os.chmod(os.path.join(d, name), 0o755)


# ---------------------------------------------------------------------------------------------
# A reader while training saves
# ---------------------------------------------------------------------------------------------
def concurrent_evaluate_trial(c: Campaign, steps: int = 200) -> None:
  """Training runs `steps` steps (a save every 5) while evaluate --checkpoint=all loops: never a
  failure."""
  w = c.workdir('concurrent')
  proc = subprocess.Popen(
    c.train_cmd(w, f'--config.total_steps={steps}'),
    cwd=REPO,
    env=c.env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  tally = c.tally('evaluate --checkpoint=all while training saves')
  while proc.poll() is None:
    if not os.path.isdir(os.path.join(w, layout.CKPT_DIR)):
      time.sleep(0.2)
      continue
    p = c.run(
      [
        sys.executable,
        '-m',
        'train.evaluate',
        f'--workdir={w}',
        '--split=test',
        '--checkpoint=all',
      ]
    )
    ok, note = c.clean(p, 0)
    if not ok and 'no checkpoints' in note:
      continue  # before the first save: nothing to read yet
    tally.add(ok, note=note)
  proc.wait()


# ---------------------------------------------------------------------------------------------
# Bad input files
# ---------------------------------------------------------------------------------------------
def bad_input_trials(c: Campaign) -> None:
  """Every bad input file, for evaluate and translate, then for the training data."""
  d = os.path.join(c.root, 'inputs')
  os.makedirs(d, exist_ok=True)
  _bad_file_trials(c, d)
  _mismatched_lines_trial(c, d)
  _missing_file_trials(c, d)
  training_data_trials(c)


def _bad_file_trials(c: Campaign, d: str) -> None:
  """Empty, non-UTF-8, CRLF and 10,000-token-line files: translate keeps N lines in, N lines
  out; evaluate scores them, or (nothing to score) fails with one error line."""
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
    p = c.run(
      [
        sys.executable,
        '-m',
        'train.translate',
        f'--workdir={c.reference_dir}',
        f'--input={path}',
      ]
    )
    ok, note = c.clean(p, 0)
    ok = ok and len(p.stdout.decode().split('\n')[:-1]) == lines
    c.tally(f'translate: {name} input').add(ok, note=note)
    want = 1 if name in ('non-UTF-8', 'empty') else 0  # nothing to score is an error
    p = c.run(
      [
        sys.executable,
        '-m',
        'train.evaluate',
        f'--workdir={c.reference_dir}',
        f'--source_file={path}',
        f'--reference_file={path}',
        '--output=' + os.path.join(d, 'out-{step}.json'),
      ]
    )
    ok, note = c.clean(p, want)
    c.tally(f'evaluate: {name} source + reference').add(ok, note=note)


def _mismatched_lines_trial(c: Campaign, d: str) -> None:
  """Sources and references of different line counts: one error line naming the lines."""
  short = os.path.join(d, 'short.txt')
  with open(short, 'w') as f:
    f.write('abc\n')
  p = c.run(
    [
      sys.executable,
      '-m',
      'train.evaluate',
      f'--workdir={c.reference_dir}',
      f'--source_file={os.path.join(d, "CRLF.txt")}',
      f'--reference_file={short}',
    ]
  )
  ok, note = c.clean(p, 1)
  c.tally('evaluate: mismatched line counts').add(ok and 'line' in note, note=note)


def _missing_file_trials(c: Campaign, d: str) -> None:
  """A missing input file for evaluate and translate: one error line, exit 1."""
  for cli in ('train.evaluate', 'train.translate'):
    flag = '--source_file' if cli == 'train.evaluate' else '--input'
    p = c.run(
      [sys.executable, '-m', cli, f'--workdir={c.reference_dir}', f'{flag}={d}/missing.txt']
    )
    ok, note = c.clean(p, 1)
    c.tally(f'{cli.split(".")[1]}: missing file').add(ok, note=note)


def training_data_trials(c: Campaign) -> None:
  """Multi30K raw files that are broken in each way, built by train.data.prepare: one-line
  errors (exit 1) or warnings (exit 0), never a traceback."""
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
    root = os.path.join(c.root, 'data', name.replace(' ', '_').replace(',', ''))
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
      env=dict(c.env, ATTNLAB_BUILD_DIR=os.path.join(root, 'build')),
    )
    ok, note = c.clean(p, expect.get(name, 0))
    c.tally(f'training data: {name}').add(ok, note=note)

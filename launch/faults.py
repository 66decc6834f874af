r"""Fault campaign: break a tiny training run every way the reliability issue lists, count
survivals.

  python -m launch.faults --out=runs/faults [--kill9=20] [--sigterm=5] [--seed=0]

Every trial runs the real command lines (`train.main`, `train.evaluate`, `train.translate`,
`train.data.prepare`) as subprocesses on a tiny length-generalisation config (40 steps, a
checkpoint every 5) and checks the outcome the README promises:
- kill -9 / SIGTERM at a random moment, then the same command again: the final params equal an
  uninterrupted run's, bit for bit (SIGTERM must also exit 0).
- one checkpoint item (params, optimizer state, data state, metadata) of the newest step
  truncated or deleted: training resumes from the previous step and ends bit-identical;
  evaluate and translate fall back too, with one warning line.
- a full disk during a save, twice: simulated (the third save raises ENOSPC as it starts), and
  real (as root: the workdir on a tmpfs with room for about 2.5 checkpoints, so a save runs out
  of space partway through its writes). One error line naming the failed step and the intact
  ones, exit 1, every listed checkpoint restores, and a rerun ends bit-identical.
- a read-only workdir: one error line, exit 1 (as root, which ignores file permissions: a
  read-only bind mount in a private mount namespace).
- `train.evaluate --checkpoint=all` in a loop while training saves: never a failure.
- bad input files (empty, non-UTF-8, CRLF, a 10,000-token line, mismatched line counts, a
  missing file) for training data, evaluate and translate: one-line errors or warnings, the
  documented exit code, never a traceback; translate keeps N lines in, N lines out.

"survived": the outcome was the promised one. "data lost": trials after which a checkpoint that
had been complete could no longer be restored, or the final params differed. The table is
printed and written to OUT/faults.md and OUT/faults.json (atomically).
The harness (tiny config, reference run, shared checks) is launch/fault_campaign.py, the trials
launch/fault_trials.py; this module runs them all and writes the table.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

from absl import flags

from launch import fault_trials
from launch.fault_campaign import Campaign, Tally
from train import layout


def run_all(c: Campaign, kill9: int, sigterm: int) -> list[Tally]:
  """The reference run, then every trial: `kill9` kill -9 and `sigterm` SIGTERM trials, every
  checkpoint item, full disk, read-only workdir, a concurrent reader and the bad inputs."""
  c.reference()
  for _ in range(kill9):
    fault_trials.signal_trial(c, signal.SIGKILL)
  for _ in range(sigterm):
    fault_trials.signal_trial(c, signal.SIGTERM)
  fault_trials.checkpoint_item_trials(c)
  fault_trials.full_disk_trial(c)
  fault_trials.full_disk_tmpfs_trial(c)
  fault_trials.read_only_trial(c)
  fault_trials.concurrent_evaluate_trial(c)
  fault_trials.bad_input_trials(c)
  return list(c.tallies.values())


def markdown(tallies, seconds: float) -> str:
  """The table of faults (trials, survived, data lost), the total and every failure's note."""
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
  tallies = run_all(Campaign(f.out, f.seed), f.kill9, f.sigterm)
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

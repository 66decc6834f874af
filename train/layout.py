"""Where every file of a run's workdir lives, and the one atomic writer that writes them.

    WORKDIR/
      config.json, config.txt           the resolved config (train.config_io)
      checkpoints/<step>/               Orbax checkpoints (train.checkpointing)
      checkpoints_bad/<step>/           steps that failed to restore, moved aside
      averaged/last{N}-{first}-{last}/  averaged params + averaged.json (train.averaging)
      eval/{split}-{step}[-{tag}].json  results (train.evaluate); `{tag}`: non-default decoding
      eval/{split}-avg{N}@{step}[-{tag}].json   the mean of N checkpoints ending at step
      eval/....hyp.txt                  the hypotheses beside each results file
      eval/ledger.json                  what --checkpoint=all has evaluated (train.scoring)
      validation_history.json, stopped.json     early stopping (train.early_stopping)
      tb/                               TensorBoard events (train.metrics)
      plots/                            launch.plots
      sweep_run.json, DONE.json, sweep.log      launch.sweep
      train.lock                        held (flock) by the one train.main writing here
      tokenizer/                        the saved tokenizer (train.loop; word2vec: sentencepiece)

A train.word2vec run's workdir (train.word2vec_io) has config.json, tokenizer/, checkpoints/ and
tb/ as above, and at the end:

      embeddings.npy                    input vectors [V, d] (read by train.embed_init)
      vocab.json                        {'words': [...], 'counts': [...]} (train.word_eval)
      vocab_kind.txt                    'word' or 'sentencepiece' (train.embed_init checks it)
      results.json                      WordSim / analogy scores and run facts
      vectors.txt                       word2vec text format (config.eval.export)

Results file names are built by `results_name` and read back by `parse_results_name`; nothing
else spells them. No JAX here (launch.sweep and launch.report import it). The module is called
`layout`, not `workdir`, because every caller already has a variable named `workdir`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import re
import socket
import sys
import tempfile
import time
from typing import Any, Sequence

CONFIG_FILE = 'config.json'
CONFIG_TEXT_FILE = 'config.txt'
CKPT_DIR = 'checkpoints'
BAD_CKPT_DIR = 'checkpoints_bad'
AVG_DIR = 'averaged'
AVG_INFO_FILE = 'averaged.json'
EVAL_DIR = 'eval'
LEDGER_FILE = 'ledger.json'
HISTORY_FILE = 'validation_history.json'
STOPPED_FILE = 'stopped.json'
TB_DIR = 'tb'
PLOTS_DIR = 'plots'
SPEC_FILE = 'sweep_run.json'
DONE_FILE = 'DONE.json'
LOG_FILE = 'sweep.log'
LOCK_FILE = 'train.lock'
TOKENIZER_DIR = 'tokenizer'
# word2vec runs
EMBEDDINGS_FILE = 'embeddings.npy'
VOCAB_FILE = 'vocab.json'
VOCAB_KIND_FILE = 'vocab_kind.txt'
W2V_RESULTS_FILE = 'results.json'
VECTORS_FILE = 'vectors.txt'

RESULTS_EXT = '.json'
HYP_EXT = '.hyp.txt'
# split (greedy, so a split may contain '-'), optional avg{N}@, step, optional -tag (decode
# settings: 'greedy', 'beam4-a0.6'; it starts with a letter, so it never reads as a step).
_RESULTS_RE = re.compile(
  r'(?P<split>.+)-(?:avg(?P<n>\d+)@)?(?P<step>\d+)'
  r'(?:-(?P<tag>[A-Za-z][^/]*?))?' + re.escape(RESULTS_EXT)
)


# ---------------------------------------------------------------------------- eval results
@dataclasses.dataclass(frozen=True)
class ResultsName:
  """What a results file name says: split, step, how many checkpoints were averaged, decoding."""

  split: str
  step: int
  averaged: int = 0  # N of an avg_last:N result; 0 for a single checkpoint
  tag: str = ''  # decode settings when they are not the config's default

  @property
  def label(self) -> str:
    return step_label(self.step, self.averaged)

  @property
  def name(self) -> str:
    return results_name(self.split, self.step, averaged=self.averaged, tag=self.tag)


def step_label(step: int, averaged: int = 0) -> str:
  """The step part of a results name: '700', or 'avg10@700' for the mean of 10 ending at 700."""
  return f'avg{int(averaged)}@{int(step)}' if averaged else str(int(step))


def results_name(split: str, step: int, *, averaged: int = 0, tag: str = '') -> str:
  """'{split}-{step}.json', '{split}-avg{N}@{step}.json', each with '-{tag}' before '.json'."""
  return f'{split}-{step_label(step, averaged)}' + (f'-{tag}' if tag else '') + RESULTS_EXT


def parse_results_name(name: str) -> ResultsName | None:
  """The inverse of `results_name` (a bare file name); None for any other file."""
  m = _RESULTS_RE.fullmatch(name)
  if not m:
    return None
  return ResultsName(m['split'], int(m['step']), int(m['n'] or 0), m['tag'] or '')


def eval_dir(workdir: str) -> str:
  return os.path.join(workdir, EVAL_DIR)


def results_path(workdir: str, split: str, step: int, *, averaged: int = 0, tag: str = '') -> str:
  return os.path.join(eval_dir(workdir), results_name(split, step, averaged=averaged, tag=tag))


def hypotheses_path(results_file: str) -> str:
  """The hypotheses file beside a results file (any path: --output names its own)."""
  stem = results_file[: -len(RESULTS_EXT)] if results_file.endswith(RESULTS_EXT) else results_file
  return stem + HYP_EXT


def latest_results(
  workdir: str, splits: Sequence[str] | None = None, *, averaged: bool = True
) -> dict[str, str]:
  """{split: 'eval/NAME.json'}: per split, the newest results file (by mtime; the first listed
  wins a tie) written with the default decode settings; what the last evaluate call wrote.

  `splits`: only these (default: every split found); `averaged=False` skips avg_last:N results.
  """
  directory = eval_dir(workdir)
  found: dict[str, tuple[float, str]] = {}
  for name in os.listdir(directory) if os.path.isdir(directory) else []:
    parsed = parse_results_name(name)
    if (
      parsed is None
      or parsed.tag
      or (parsed.averaged and not averaged)
      or (splits is not None and parsed.split not in splits)
    ):
      continue
    mtime = os.path.getmtime(os.path.join(directory, name))
    if parsed.split not in found or mtime > found[parsed.split][0]:
      found[parsed.split] = (mtime, os.path.join(EVAL_DIR, name))
  keys = found if splits is None else [s for s in splits if s in found]
  return {s: found[s][1] for s in keys}


# ---------------------------------------------------------------------------- word2vec runs
def tokenizer_dir(workdir: str) -> str:
  return os.path.join(workdir, TOKENIZER_DIR)


def embeddings_path(workdir: str) -> str:
  return os.path.join(workdir, EMBEDDINGS_FILE)


def vocab_path(workdir: str) -> str:
  return os.path.join(workdir, VOCAB_FILE)


def vocab_kind_path(workdir: str) -> str:
  return os.path.join(workdir, VOCAB_KIND_FILE)


def w2v_results_path(workdir: str) -> str:
  return os.path.join(workdir, W2V_RESULTS_FILE)


def vectors_path(workdir: str) -> str:
  return os.path.join(workdir, VECTORS_FILE)


# ---------------------------------------------------------------------------- writing
def write_atomic(path, data: bytes) -> None:
  """Write to a temp file in the same directory, then rename over `path`.

  A reader sees the old file or the whole new one, never a part; a failed write leaves the old
  file and no temp file. The file ends up readable by everyone (0644, as open() gives under the
  usual umask), not mkstemp's private 0600: results and reports are meant to be shared.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      os.fchmod(f.fileno(), 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text(path, text: str) -> None:
  """`text` as UTF-8, atomically."""
  write_atomic(path, text.encode('utf-8'))


def write_json(path, obj: Any, *, sort_keys: bool = True, default=None) -> None:
  """`obj` as JSON indented by 2 with a final newline, atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=default) + '\n')


# ---------------------------------------------------------------------------- writer lock
class WorkdirBusy(BlockingIOError):
  """Another live process is training into this workdir."""


class WorkdirLock:
  """One writer per workdir: an exclusive flock on WORKDIR/train.lock, which records who holds it.

  The kernel drops a flock when its process dies (kill -9 included), so a lock file left by a
  killed run is stale by construction: the next writer takes it over and says so. Readers
  (evaluate, translate, plots during training) never take it.
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self._file = None

  def holder(self) -> dict[str, Any]:
    try:
      return json.loads(self.path.read_text() or '{}')
    except (OSError, ValueError):
      return {}

  def acquire(self) -> dict[str, Any]:
    """Takes the lock; returns the stale holder's record ({} if none). Raises WorkdirBusy."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    f = open(self.path, 'a+')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.close()
      h = self.holder()
      who = (
        f'pid {h.get("pid", "?")} on {h.get("host", "?")} since {h.get("since", "?")}'
        if h
        else 'another process'
      )
      raise WorkdirBusy(
        f'{self.path.parent} is being trained by {who} ({h.get("command", "?")}); wait for it, '
        f'stop it (kill -TERM {h.get("pid", "PID")} saves and exits), or pick another '
        f'--workdir'
      ) from None
    stale = self.holder()
    f.seek(0)
    f.truncate()
    f.write(
      json.dumps(
        {
          'pid': os.getpid(),
          'host': socket.gethostname(),
          'since': time.strftime('%Y-%m-%d %H:%M:%S'),
          'command': ' '.join(sys.argv)[:300],
        }
      )
    )
    f.flush()
    self._file = f
    return stale

  def release(self) -> None:
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()  # a clean exit leaves no holder behind
      self._file.flush()
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

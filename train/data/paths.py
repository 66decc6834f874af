"""Where raw corpora come from and where built artefacts go; small shared file helpers."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import pathlib
import socket
import urllib.parse

from train import layout

DATA_ENV = 'ATTNLAB_DATA_DIR'
BUILD_ENV = 'ATTNLAB_BUILD_DIR'
SHARED_LAYOUT = 'multi30k/, text/, word_eval/ (like ../shared/data/)'
# The one set of defaults, inside and outside `make` (the Makefile sets neither variable):
# built artefacts under the checkout, raw corpora in ../shared/data beside it when that exists.
REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_BUILD_DIR = REPO / '.cache' / 'attnlab'
DEFAULT_DATA_DIR = REPO.parent / 'shared' / 'data'


class DataUnavailable(FileNotFoundError):
  """Raw data is neither on disk nor reachable: the message names the directory, the variable,
  the flag and the upstream URL."""


def build_dir() -> pathlib.Path:
  """Cache of built tfds datasets and tokenizers: $ATTNLAB_BUILD_DIR, else DEFAULT_BUILD_DIR."""
  root = os.environ.get(BUILD_ENV)
  return pathlib.Path(root).expanduser() if root else DEFAULT_BUILD_DIR


def data_root(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The raw-corpus root: the argument, else $ATTNLAB_DATA_DIR, else DEFAULT_DATA_DIR when it
  exists, else None (= download)."""
  root = data_dir or os.environ.get(DATA_ENV) or None
  if root:
    return pathlib.Path(root).expanduser()
  return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def require_online(url: str, what: str, timeout: float = 5.0) -> None:
  """Fails fast, in one line, when `url`'s host cannot be reached (instead of a retry loop)."""
  parts = urllib.parse.urlsplit(url)
  host = parts.hostname or url
  try:
    socket.create_connection(
      (host, parts.port or (80 if parts.scheme == 'http' else 443)), timeout=timeout
    ).close()
  except OSError as e:
    raise DataUnavailable(
      f'no local copy of {what} and {host} is unreachable ({e.__class__.__name__}: {e}); '
      f'put the files in {DEFAULT_DATA_DIR / what} or point {DATA_ENV} (or '
      f'--config.data.data_dir) at a directory laid out as {SHARED_LAYOUT}; upstream: {url}'
    ) from None


def corpus_dir(
  name: str, data_dir=None, example_file: str = '', source: str = ''
) -> pathlib.Path | None:
  """`<root>/<name>` when a root is configured (must exist), None when loaders should download
  (from `source`, named in the error)."""
  root = data_root(data_dir)
  if root is None:
    return None
  path = root / name
  if not path.is_dir():
    hint = f' (expected files like {path / example_file})' if example_file else ''
    raise FileNotFoundError(
      f'Data directory {path} does not exist{hint}. Point {DATA_ENV} (or '
      f'--config.data.data_dir) at a directory laid out as {SHARED_LAYOUT}, or unset both to '
      f'download the public corpus{" from " + source if source else ""} (needs internet).'
    )
  return path


def fingerprint(paths, extra: str = '') -> str:
  """sha256 over file names and contents (+ extra): keys caches so changed inputs rebuild."""
  digest = hashlib.sha256(extra.encode())
  for path in sorted(pathlib.Path(p) for p in paths):
    digest.update(path.name.encode() + b'\0')
    with open(path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)
  return digest.hexdigest()


def read_gz_lines(path) -> tuple[list[str | None], int]:
  """Lines of a gzip text file; None marks an empty or non-UTF-8 line. Returns (lines, n_bad)."""
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # BadGzipFile is an OSError
    raise ValueError(
      f'{path}: cannot read as gzip text ({e}); re-download or re-compress it.'
    ) from e
  if raw.endswith(b'\n'):
    raw = raw[:-1]
  lines: list[str | None] = []
  bad = 0
  for chunk in raw.split(b'\n') if raw else []:
    try:
      line = chunk.decode('utf-8').strip()
    except UnicodeDecodeError:
      line = ''
    if not line:
      bad += 1
      lines.append(None)
    else:
      lines.append(line)
  return lines, bad


# The repo-wide atomic writer lives with the workdir layout; callers here keep this name.
write_atomic = layout.write_atomic


@contextlib.contextmanager
def build_lock(name: str):
  """Exclusive inter-process lock under the build dir (parallel test workers build the same
  dataset or tokenizer; the second waits and then reuses the first one's result)."""
  lock_dir = build_dir() / 'locks'
  lock_dir.mkdir(parents=True, exist_ok=True)
  with open(lock_dir / f'{name}.lock', 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)

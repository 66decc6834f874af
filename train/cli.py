"""What every attnlab command line shares: one-line errors and two exit codes.

  exit 2  usage: a bad flag, a missing required flag, an unknown config value
  exit 1  runtime: a missing or unreadable file, no data, a busy workdir, a diverged run

A user's mistake prints one line, `error: ...`, that names the problem and the fix; never a
traceback. `ATTNLAB_TRACEBACK=1` re-raises instead, for debugging attnlab itself.

  if __name__ == '__main__':
    cli.run(main, define_flags=define_flags, required=('config', 'workdir'))
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Callable, Mapping, Sequence

from absl import app, flags

USAGE_EXIT, RUNTIME_EXIT = 2, 1
TRACEBACK_ENV = 'ATTNLAB_TRACEBACK'
MALLOC_ENV = 'ATTNLAB_MALLOC'  # 'system': run with malloc as the environment set it up
HUGE_PAGE_TUNABLE = 'glibc.malloc.hugetlb=1'
REEXEC_ENV = 'ATTNLAB_MALLOC_REEXEC'  # set in the re-run process: never re-run twice
THP_ENABLED = '/sys/kernel/mm/transparent_hugepage/enabled'


class UsageError(ValueError):
  """A bad command line or config value (exit 2)."""


# Errors a user's input can cause. OSError covers missing / unreadable files, a full disk,
# train.data.paths.DataUnavailable and a busy workdir; ValueError covers bad values and
# UnicodeDecodeError; FloatingPointError is a diverged run (train.loop.NaNLossError).
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def one_line(error: BaseException) -> str:
  """The message on one line; a traceback embedded in it (ml_collections puts the config
  file's in its flag error) shrinks to its last line, the exception itself."""
  text = str(error)
  if 'Traceback (most recent call last)' in text:
    head = text.split('Traceback (most recent call last)')[0].strip().rstrip(':')
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = f'{head}: {lines[-1]}'
  return ' '.join(text.split()) or error.__class__.__name__


def fail(message: str, code: int) -> None:
  sys.stderr.write(f'error: {message}\n')
  sys.stderr.flush()
  sys.exit(code)


def parse_flags(argv: Sequence[str]):
  """absl's parser with a one-line message and exit 2 (absl prints a block and exits 1)."""
  if os.environ.get(TRACEBACK_ENV):
    return flags.FLAGS(list(argv))
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    fail(f'{one_line(e)} (--helpshort lists the flags)', USAGE_EXIT)
  except (AttributeError, KeyError) as e:  # ml_collections: --config.KEY that the config lacks
    given = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    fail(
      f'a --config.KEY override names a key the config does not have ({one_line(e)}); '
      f'overrides given: {given}; see the config file for the keys',
      USAGE_EXIT,
    )
  except Exception as e:  # pylint: disable=broad-except  # e.g. a config file that fails to load
    fail(f'cannot parse the command line: {type(e).__name__}: {one_line(e)}', USAGE_EXIT)


def guarded(main: Callable) -> Callable:
  """`main` with user errors turned into one line and an exit code."""

  def wrapper(argv):
    if os.environ.get(TRACEBACK_ENV):
      return main(argv)
    try:
      return main(argv)
    except (UsageError, app.UsageError) as e:
      fail(one_line(e), USAGE_EXIT)
    except USER_ERRORS as e:
      fail(one_line(e), RUNTIME_EXIT)

  return wrapper


def thp_mode(path: str = THP_ENABLED) -> str | None:
  """The kernel's transparent huge page mode ('always', 'madvise', 'never'), None if unknown."""
  try:
    with open(path) as f:
      found = re.search(r'\[(\w+)\]', f.read())
  except OSError:
    return None
  return found.group(1) if found else None


def huge_page_environ(
  environ: Mapping[str, str], thp: str | None, libc: tuple[str, str]
) -> dict[str, str] | None:
  """The environment to re-run a command under so that glibc's malloc asks the kernel for
  transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, glibc >= 2.35), or None
  where that changes nothing: THP 'always' (already huge) or 'never', another C library, a
  tunable already chosen, $ATTNLAB_MALLOC=system, or a process that is the re-run already
  (its environment has $ATTNLAB_MALLOC_REEXEC, so a wrapper that resets GLIBC_TUNABLES cannot
  make it loop).

  Why: XLA:CPU allocates an executable's temporaries as one block per device and call (~240 MB
  per device for `size=small`'s train step). Blocks over 32 MB are always mmapped and unmapped
  by glibc, so every call writes fresh 4 KiB pages: ~120k page faults per train step. With huge
  pages it is ~1k (docs/performance.md, "Huge pages for malloc").
  """
  if environ.get(MALLOC_ENV) == 'system' or environ.get(REEXEC_ENV) or thp != 'madvise':
    return None
  name, version = libc
  numbers = tuple(int(n) for n in re.findall(r'\d+', version)[:2])
  if name != 'glibc' or numbers < (2, 35):
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb=' in tunables:
    return None
  tunables = ':'.join(t for t in (tunables, HUGE_PAGE_TUNABLE) if t)
  return {**environ, 'GLIBC_TUNABLES': tunables, REEXEC_ENV: '1'}


def exec_with_huge_pages() -> None:
  """Replaces this process (same pid, same arguments) by one whose malloc uses huge pages,
  where `huge_page_environ` says that helps; else returns. glibc reads tunables only at start,
  hence the re-exec, which costs one more start-up (imports, ~1.5 s). Only for a command's
  entry point, before any work: whatever ran before is lost."""
  env = huge_page_environ(os.environ, thp_mode(), platform.libc_ver())
  if env is None or not sys.executable or not getattr(sys, 'orig_argv', None):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:  # the interpreter cannot be re-run: go on with malloc as it is
    return


def run(
  main: Callable,
  *,
  define_flags: Callable | None = None,
  required: Sequence[str] = (),
  huge_pages: bool = False,
) -> None:
  """Defines the flags, marks `required` ones, and runs `main` under `guarded`. With
  `huge_pages` (commands that run XLA computations), first `exec_with_huge_pages`, but only
  where `main` is the `__main__` module's (a command line, not a caller importing this)."""
  if huge_pages and getattr(main, '__module__', None) == '__main__':
    exec_with_huge_pages()
  if define_flags is not None:
    define_flags()
  for name in required:
    flags.mark_flag_as_required(name)
  app.run(guarded(main), flags_parser=parse_flags)

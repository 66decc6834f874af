"""Every command line: one-line errors, exit 2 for usage and 1 for runtime, never a traceback for
a user's mistake; and the one-writer lock on a training workdir."""

import json
import os
import subprocess
import sys

import pytest

from tests.xla_flags import xla_flags
from train import layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args, stdin=None, env_extra=None):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env.pop('ATTNLAB_TRACEBACK', None)
  env.update(env_extra or {})
  return subprocess.run(
    [sys.executable, '-m', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    input=stdin,
  )


def _one_error_line(p):
  assert 'Traceback' not in p.stderr, p.stderr[-3000:]
  errors = [line for line in p.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, p.stderr[-3000:]
  return errors[0]


@pytest.mark.parametrize(
  'args, code, words',
  [
    # usage: exit 2
    (('train.main', '--config=configs/multi30k.py'), 2, ['--workdir']),
    (('train.main', '--workdir=W', '--config=configs/multi30k.py', '--config.nope=1'), 2, ['nope']),
    (
      ('train.main', '--workdir=W', '--config=configs/multi30k.py:size=huge'),
      2,
      ['huge', 'wu2021'],
    ),
    (
      (
        'train.main',
        '--workdir=W',
        '--config=configs/multi30k.py',
        '--config.model.attention=bogus',
      ),
      2,
      ['bogus', 'dot', 'additive'],
    ),
    (('train.main', '--workdir=W', '--config=configs/multi30k.py', 'stray'), 2, ['stray']),
    (('train.evaluate', '--workdir=W', '--decode=sample'), 2, ['decode', 'beam']),
    (('train.evaluate',), 2, ['--workdir']),
    (('train.translate', '--workdir=W', '--input=x.txt', 'a sentence'), 2, ['not both']),
    (('launch.plots',), 2, ['--workdir']),
    (('train.data.prepare',), 2, ['--config']),
    (
      (
        'train.word2vec',
        '--config=configs/word2vec.py',
        '--config.model.objective=x',
        '--workdir=W',
      ),
      2,
      ["objective='x'", 'skipgram'],
    ),
    (
      ('launch.benchmark', '--config=configs/multi30k.py:size=tiny', '--sweep=model.position=x'),
      2,
      ["position='x'", 'rotary'],
    ),
    (
      ('launch.benchmark', '--config=configs/multi30k.py:size=tiny', '--steps=0'),
      2,
      ['--steps=0', 'not a positive integer'],
    ),
    (
      ('launch.peer', '--config=configs/multi30k.py:size=tiny', '--decode_pairs=-1'),
      2,
      ['--decode_pairs=-1', 'not a non-negative integer'],
    ),
    # runtime: exit 1
    (('train.evaluate', '--workdir=/nonexistent/w'), 1, ['/nonexistent/w', 'no such directory']),
    (('train.translate', '--workdir=/nonexistent/w', 'a dog'), 1, ['/nonexistent/w']),
    (('launch.plots', '--workdir=/nonexistent/w'), 1, ['/nonexistent/w']),
    (('train.translate', '--workdir=/nonexistent/w', '--input=/dev/null'), 1, ['/nonexistent/w']),
    (('launch.report', '/nonexistent/root'), 1, ['/nonexistent/root', 'no such directory']),
    (
      ('train.translate', '--workdir=/nonexistent/w', '--input=/nonexistent/in.txt'),
      1,
      ['/nonexistent/in.txt', 'no such file'],
    ),
  ],
)
def test_one_line_error_and_exit_code(args, code, words):
  p = _cli(*args)
  assert p.returncode == code, (p.returncode, p.stderr[-3000:])
  line = _one_error_line(p)
  for w in words:
    assert w in line, line


def test_traceback_on_request():
  p = _cli('train.evaluate', '--workdir=/nonexistent/w', env_extra={'ATTNLAB_TRACEBACK': '1'})
  assert p.returncode == 1 and 'Traceback' in p.stderr


# ------------------------------------------------------------------------------ workdir lock


def test_second_writer_is_refused_naming_the_holder(tmp_path):
  first = layout.WorkdirLock(tmp_path)
  assert first.acquire() == {}
  try:
    with pytest.raises(layout.WorkdirBusy, match=f'pid {os.getpid()} on ') as err:
      layout.WorkdirLock(tmp_path).acquire()
    assert 'kill -TERM' in str(err.value) and '--workdir' in str(err.value)
  finally:
    first.release()
  again = layout.WorkdirLock(tmp_path)  # released: free again, and no holder is left behind
  assert again.acquire() == {}
  again.release()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
  holder = subprocess.Popen(
    [
      sys.executable,
      '-c',
      'import sys, time; from train import layout; '
      'lock = layout.WorkdirLock(sys.argv[1]); lock.acquire(); print("held", flush=True); '
      'time.sleep(60)',
      str(tmp_path),
    ],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=REPO),
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(layout.WorkdirBusy, match=f'pid {holder.pid} '):
      layout.WorkdirLock(tmp_path).acquire()
  finally:
    holder.kill()  # kill -9: the kernel drops its flock
    holder.wait()
  lock = layout.WorkdirLock(tmp_path)
  stale = lock.acquire()
  assert stale['pid'] == holder.pid  # its record was left behind, and is reported
  assert json.loads((tmp_path / layout.LOCK_FILE).read_text())['pid'] == os.getpid()
  lock.release()


def test_train_main_refuses_a_workdir_in_use(tmp_path):
  lock = layout.WorkdirLock(tmp_path / 'w')
  lock.acquire()
  try:
    p = _cli('train.main', '--config=configs/lengthgen.py', f'--workdir={tmp_path / "w"}')
  finally:
    lock.release()
  assert p.returncode == 1, p.stderr[-3000:]
  line = _one_error_line(p)
  assert f'pid {os.getpid()}' in line and 'is being trained by' in line
  assert sorted(os.listdir(tmp_path / 'w')) == [layout.LOCK_FILE]  # nothing else written


# ------------------------------------------------------------------------ huge pages for malloc

GLIBC = ('glibc', '2.36')
# What decides whether a command re-runs itself; cleared so the tests start from none of them.
MALLOC_ENV_NAMES = ('ATTNLAB_MALLOC', 'ATTNLAB_MALLOC_REEXEC', 'GLIBC_TUNABLES')


@pytest.mark.parametrize(
  'environ, thp, libc, tunables',
  [
    ({}, 'madvise', GLIBC, 'glibc.malloc.hugetlb=1'),
    (
      {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'},
      'madvise',
      ('glibc', '2.35'),
      'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1',
    ),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'madvise', GLIBC, None),  # the user chose
    ({'ATTNLAB_MALLOC': 'system'}, 'madvise', GLIBC, None),
    ({'ATTNLAB_MALLOC_REEXEC': '1'}, 'madvise', GLIBC, None),  # the re-run: never again
    ({}, 'always', GLIBC, None),  # every large mapping is huge already
    ({}, 'never', GLIBC, None),
    ({}, None, GLIBC, None),  # no THP file: not Linux, or a kernel without THP
    ({}, 'madvise', ('glibc', '2.34'), None),  # the tunable came with 2.35
    ({}, 'madvise', ('', ''), None),  # musl, or unknown
  ],
)
def test_huge_page_environ(environ, thp, libc, tunables):
  from train import cli  # pylint: disable=import-outside-toplevel

  env = cli.huge_page_environ({'PATH': '/bin', **environ}, thp, libc)
  if tunables is None:
    assert env is None
  else:
    assert env == {
      'PATH': '/bin',
      **environ,
      'GLIBC_TUNABLES': tunables,
      'ATTNLAB_MALLOC_REEXEC': '1',
    }


@pytest.mark.parametrize(
  'text, mode', [('always [madvise] never\n', 'madvise'), ('[always] madvise never', 'always')]
)
def test_thp_mode_reads_the_bracketed_choice(tmp_path, text, mode):
  from train import cli  # pylint: disable=import-outside-toplevel

  (tmp_path / 'enabled').write_text(text)
  assert cli.thp_mode(str(tmp_path / 'enabled')) == mode
  assert cli.thp_mode(str(tmp_path / 'missing')) is None


def _huge_pages_apply():
  from train import cli  # pylint: disable=import-outside-toplevel
  import platform  # pylint: disable=import-outside-toplevel

  env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV_NAMES}
  return cli.huge_page_environ(env, cli.thp_mode(), platform.libc_ver()) is not None


def _thp_fallbacks():
  """Faults where the kernel wanted a huge page and had none (/proc/vmstat), 0 if unknown."""
  try:
    with open('/proc/vmstat') as f:
      return sum(int(n) for k, n in (line.split() for line in f) if k == 'thp_fault_fallback')
  except OSError:
    return 0


# A command whose main reports its pid and tunables, then makes XLA:CPU allocate a 128 MiB
# temporary per call (the [8192, 4096] product that the second matmul reads) and counts the
# page faults of 5 calls.
_COMMAND = """
import os, resource, sys
print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), flush=True)
from train import cli

def main(argv):
  import jax, jax.numpy as jnp
  f = jax.jit(lambda x, w: (x @ w) @ w.T)
  x, w = jnp.ones((8192, 16)), jnp.ones((16, 4096))
  f(x, w).block_until_ready()
  f(x, w).block_until_ready()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    f(x, w).block_until_ready()
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
  print('main', os.getpid(), os.environ.get('GLIBC_TUNABLES'), argv[1:], faults, flush=True)

cli.run(main, huge_pages=True)
"""


@pytest.mark.skipif(not _huge_pages_apply(), reason='needs THP madvise and glibc >= 2.35')
def test_a_command_reruns_itself_with_huge_pages_and_faults_less(tmp_path):
  """Same pid and arguments, the tunable set, and the page faults of a large XLA temporary drop
  from one per 4 KiB page (~32k per call) to a few per 2 MiB page; ATTNLAB_MALLOC=system runs
  as started."""
  script = tmp_path / 'command.py'
  script.write_text(_COMMAND)

  def run(**env_extra):
    env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
    for name in MALLOC_ENV_NAMES:
      env.pop(name, None)
    env.update(env_extra)
    p = subprocess.run(
      [sys.executable, str(script), 'arg'], env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return [line.split() for line in p.stdout.splitlines()]

  fallbacks = _thp_fallbacks()
  first, second, main = run()  # started without the tunable, then again with it: one pid
  assert first == ['start', main[1], 'None'] and second == ['start', main[1], main[2]]
  assert main[2] == 'glibc.malloc.hugetlb=1' and main[3] == "['arg']"
  huge_faults = float(main[4])

  first, main = run(ATTNLAB_MALLOC='system')  # no second start
  assert first[1] == main[1] and main[2] == 'None'
  system_faults = float(main[4])
  pages = 8192 * 4096 * 4 / 4096
  assert system_faults > 0.5 * pages, (system_faults, pages)
  if huge_faults >= 0.1 * system_faults and _thp_fallbacks() > fallbacks:
    pytest.skip('the kernel had no free huge pages (thp_fault_fallback rose): nothing to test')
  assert huge_faults < 0.1 * system_faults, (huge_faults, system_faults)


def test_one_line_error_and_exit_code_after_the_huge_page_rerun():
  p = _cli('train.main', '--config=configs/multi30k.py', env_extra={'ATTNLAB_MALLOC': ''})
  assert p.returncode == 2, p.stderr[-3000:]
  assert '--workdir' in _one_error_line(p)


def test_an_interpreter_that_cannot_be_rerun_goes_on_as_it_is(monkeypatch):
  from train import cli  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(cli, 'thp_mode', lambda: 'madvise')
  monkeypatch.setattr(cli.platform, 'libc_ver', lambda: ('glibc', '2.36'))
  for name in MALLOC_ENV_NAMES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(sys, 'executable', '/nonexistent/python')
  assert cli.exec_with_huge_pages() is None  # execve failed: returned instead of raising

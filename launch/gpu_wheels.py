r"""Wheels of what the lent GPU machines' image lacks, for `launch.gpu_check` there.

  python -m launch.gpu_wheels --dest=.whl   # here, after `make install`; then carry .whl

That image (/work/.library/device/KINDS.md: Python 3.12, its own jax 0.11.2 with CUDA 13, flax,
optax, orbax-checkpoint, ...) cannot fetch anything. Six of this project's dependencies are not in
it, nor are ten of theirs. This fetches a cp312 manylinux wheel of each (sdist-only packages are
built into wheels here), at the versions this checkout's environment resolved: the direct
dependencies' pins come from pyproject.toml, the rest from the installed metadata. Then, on the
device machine, from the repository root (the device tool's `run`, with `carry=[".whl"]`):

  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=/tmp/site:$PWD && python3 -m launch.gpu_check --out=$OUT --budget_s=470

Checked on 2026-12-07 against a Python 3.12 environment holding the image's relevant packages and
jax 0.11.2 (CPU): `launch.gpu_check --dry_run` and the check's test lists pass there.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Packages the image holds (KINDS.md, read 2026-11-17) among this project's dependencies and
# theirs; tests/launch/test_gpu_wheels.py checks that every package the missing ones need is
# here, in IMAGE_LACKS, or fetched as a direct dependency.
IMAGE_HAS = frozenset(
  'absl-py attrs certifi charset-normalizer click cloudpickle einops etils flax fsspec idna jax '
  'jaxlib joblib matplotlib numpy optax orbax-checkpoint packaging protobuf psutil pyarrow pyyaml '
  'regex requests sacrebleu scipy sentencepiece six tensorboard tqdm typing-extensions urllib3 '
  'wrapt zipp'.split()
)
# What the missing direct dependencies need that the image lacks too.
IMAGE_LACKS = (
  'dm-tree',
  'docstring-parser',
  'googleapis-common-protos',
  'immutabledict',
  'portpicker',
  'promise',
  'simple-parsing',
  'tensorflow-metadata',
  'termcolor',
  'toml',
)
PLATFORMS = (
  'manylinux_2_28_x86_64',
  'manylinux_2_27_x86_64',
  'manylinux_2_24_x86_64',
  'manylinux_2_17_x86_64',
  'manylinux2014_x86_64',
  'manylinux1_x86_64',
  'any',
)

flags.DEFINE_string('dest', '.whl', 'Directory for the wheels (created).')


def canonical(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def pinned_dependencies(pyproject: str | None = None) -> dict[str, str]:
  """{canonical name: version} of pyproject.toml's `dependencies` (all pinned with ==)."""
  import tomllib  # pylint: disable=import-outside-toplevel

  with open(pyproject or os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    deps = tomllib.load(f)['project']['dependencies']
  out = {}
  for dep in deps:
    name, sep, version = dep.partition('==')
    if not sep:
      raise ValueError(f'pyproject.toml: {dep!r} is not pinned with ==')
    out[canonical(name.split('[')[0])] = version.strip()
  return out


def wanted() -> list[tuple[str, str]]:
  """[(name, version)] to fetch: the pinned dependencies the image lacks, then what they need
  that it lacks (at the versions installed here)."""
  direct = [(n, v) for n, v in pinned_dependencies().items() if n not in IMAGE_HAS]
  rest = []
  for name in IMAGE_LACKS:
    try:
      rest.append((name, importlib.metadata.version(name)))
    except importlib.metadata.PackageNotFoundError:
      raise SystemExit(f'error: {name} is not installed here; run `make install` first') from None
  return direct + rest


def fetch(dest: str) -> list[str]:
  """Download (or build) each wheel into `dest`; returns the pip commands run."""
  os.makedirs(dest, exist_ok=True)
  platform_args = [a for p in PLATFORMS for a in ('--platform', p)]
  commands = []
  for name, version in wanted():
    spec = f'{name}=={version}'
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:']
    cmd += ['--python-version', '3.12', '--implementation', 'cp', *platform_args, '-d', dest, spec]
    if subprocess.run(cmd, check=False, capture_output=True).returncode:
      # No wheel on the index (promise): build one from the sdist; pure Python, any platform.
      cmd = [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', dest, spec]
      result = subprocess.run(cmd, check=False, capture_output=True, text=True)
      if result.returncode:
        raise SystemExit(f'error: no wheel for {spec}: {result.stderr.strip()[-500:]}')
    commands.append(' '.join(cmd))
  return commands


def main(argv):
  del argv
  commands = fetch(flags.FLAGS.dest)
  files = sorted(os.listdir(flags.FLAGS.dest))
  size = sum(os.path.getsize(os.path.join(flags.FLAGS.dest, f)) for f in files)
  print(
    f'{len(commands)} packages, {len(files)} files, {size / 2**20:.1f} MiB in {flags.FLAGS.dest}'
  )


if __name__ == '__main__':
  app.run(main)

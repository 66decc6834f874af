"""Before/after check for refactors of train/: the same short real run with two commits.

  .venv/bin/python tests/train/bit_identity_run.py OLD_COMMIT [--steps=60]

Trains `configs/multi30k.py:size=tiny` (real Multi30K, dropout on, validation with greedy
BLEU at the end) once with OLD_COMMIT's code (`git archive` into a temp dir, first on
PYTHONPATH) and once with the working tree, and asserts the logged training losses, the
validation line and every parameter of the final checkpoint are identical. Not collected by
pytest (no `test_` prefix): it takes a few minutes.
"""

import os
import re
import subprocess
import sys
import tempfile

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train(code_dir, workdir, steps):
  env = dict(os.environ, PYTHONPATH=code_dir, JAX_PLATFORMS='cpu')
  # Old code may predate the in-code defaults (train/data/paths.py): pass both directories.
  env.setdefault('ATTNLAB_BUILD_DIR', os.path.join(REPO, '.cache', 'attnlab'))
  env.setdefault('ATTNLAB_DATA_DIR', os.path.join(os.path.dirname(REPO), 'shared', 'data'))
  cmd = [
    sys.executable,
    '-m',
    'train.main',
    '--config=configs/multi30k.py:size=tiny',
    f'--workdir={workdir}',
    f'--config.total_steps={steps}',
    f'--config.eval_every={steps}',
    f'--config.checkpoint_every={steps}',
    '--config.log_every=10',
  ]
  p = subprocess.run(cmd, cwd=code_dir, env=env, capture_output=True, text=True)
  if p.returncode:
    sys.exit(f'{code_dir}: train.main failed:\n{p.stderr[-3000:]}')
  losses = re.findall(r'step +(\d+)/\d+ \| loss ([0-9.]+)', p.stderr)
  val = re.findall(r'step \d+ \| (val_loss .*)', p.stderr)
  return losses, val


def main():
  old_commit = sys.argv[1]
  steps = int(sys.argv[2].split('=')[1]) if len(sys.argv) > 2 else 60
  with tempfile.TemporaryDirectory() as tmp:
    old_code = os.path.join(tmp, 'old')
    os.makedirs(old_code)
    archive = subprocess.run(
      ['git', 'archive', old_commit], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(['tar', '-x', '-C', old_code], input=archive, check=True)
    before = train(old_code, os.path.join(tmp, 'w_old'), steps)
    after = train(REPO, os.path.join(tmp, 'w_new'), steps)
    print('losses before:', before[0])
    print('losses after: ', after[0])
    print('validation before:', before[1])
    print('validation after: ', after[1])
    assert before == after, 'logged losses or validation differ'
    sys.path.insert(0, REPO)
    from train import checkpointing  # pylint: disable=import-outside-toplevel

    a = checkpointing.restore_params(os.path.join(tmp, 'w_old'), steps)
    b = checkpointing.restore_params(os.path.join(tmp, 'w_new'), steps)
    leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    differ = sum(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)
    print(f'{len(leaves)} parameter arrays, {differ} differ')
    assert differ == 0


if __name__ == '__main__':
  main()

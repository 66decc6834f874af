"""launch.multihost: who is the coordinator, how many processes, which one is this."""

import os
import subprocess
import sys

import pytest

from launch import multihost

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLURM = {
  'SLURM_JOB_ID': '4097',
  'SLURM_NTASKS': '4',
  'SLURM_PROCID': '2',
  'SLURM_STEP_NODELIST': 'gpu[007-010,12],cpu1',
}


@pytest.mark.parametrize(
  'nodelist, first',
  [
    ('node001', 'node001'),
    ('node001,host2', 'node001'),
    ('node[001-0015],host2', 'node001'),
    ('node[003,007-015],host2', 'node003'),
    ('a-b[9]', 'a-b9'),
  ],
)
def test_first_slurm_host(nodelist, first):
  assert multihost.first_slurm_host(nodelist) == first


def test_slurm_environment():
  # Port rule: 61440 + job id mod 4096, the range jax's own SLURM detection uses.
  assert multihost.resolve({}, SLURM) == {
    'coordinator': 'gpu007:61441',
    'num_processes': 4,
    'process_id': 2,
  }


def test_explicit_flags_win_and_fill_gaps():
  got = multihost.resolve({'coordinator': 'head:1234'}, SLURM)
  assert got == {'coordinator': 'head:1234', 'num_processes': 4, 'process_id': 2}
  ompi = {'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '1', 'ATTNLAB_COORDINATOR': 'h0:99'}
  assert multihost.resolve({}, ompi) == {
    'coordinator': 'h0:99',
    'num_processes': 2,
    'process_id': 1,
  }


def test_tpu_pod_leaves_discovery_to_jax():
  values = multihost.resolve({}, {'TPU_WORKER_HOSTNAMES': 'a,b', 'TPU_WORKER_ID': '1'})
  assert multihost.distributed_flags(values) == ['--multihost_auto']
  assert multihost.resolve({'auto': True}, {}) == {
    'auto': True
  }  # --auto: no TPU_* variables needed
  assert multihost.parse_args(['--auto', '--', 'cmd']) == ({'auto': True}, False, ['cmd'])


@pytest.mark.parametrize(
  'explicit, env, message',
  [
    ({}, {}, r"cannot tell \['coordinator', 'num_processes', 'process_id'\]"),
    ({'coordinator': 'h', 'num_processes': '2', 'process_id': '0'}, {}, 'needs a port'),
    ({'coordinator': 'h:1', 'num_processes': '2', 'process_id': '2'}, {}, r'outside 0\.\.1'),
    (
      {},
      {'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '0'},
      r"cannot tell \['coordinator'\]",
    ),
  ],
)
def test_errors_say_what_is_missing(explicit, env, message):
  with pytest.raises(ValueError, match=message):
    multihost.resolve(explicit, env)


def test_cli_appends_flags_to_the_command():
  env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'OMPI_', 'TPU_'))}
  env.update(SLURM)
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.multihost',
      '--dry_run',
      '--',
      'python',
      '-m',
      'train.main',
      '--workdir=/w x',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == (
    "python -m train.main '--workdir=/w x' --coordinator_address=gpu007:61441 "
    '--num_processes=4 --process_id=2'
  )
  bad = subprocess.run(
    [sys.executable, '-m', 'launch.multihost', '--bogus', '--', 'true'],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert bad.returncode != 0 and 'unknown flag' in bad.stderr

r"""One training run over several hosts: run the same command on every host.

  python -m launch.multihost \
      [--coordinator=HOST:PORT --num_processes=N --process_id=I | --auto] -- \
      python -m train.main --config=configs/multi30k.py --workdir=/shared/runs/big

Every host runs exactly this line (one process per host, each driving its local accelerators).
The launcher finds who is who, appends `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` to the command (train.main passes them to `jax.distributed.initialize`) and
replaces itself with the command. The workdir must be on storage every host can reach.

Where the values come from, first match wins:
1. Explicit flags (`--coordinator`, `--num_processes`, `--process_id`); any missing one is still
   looked up below. The environment variables ATTNLAB_COORDINATOR, ATTNLAB_NUM_PROCESSES,
   ATTNLAB_PROCESS_ID count as explicit flags.
2. SLURM (`srun --ntasks-per-node=1 python -m launch.multihost -- ...` inside sbatch/salloc):
   the first host of SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST) is the coordinator, the port is
   derived from SLURM_JOB_ID (so two jobs on one node do not collide), SLURM_NTASKS processes,
   this one is SLURM_PROCID.
3. Open MPI (`mpirun -np N --map-by ppr:1:node ...`): OMPI_COMM_WORLD_SIZE / _RANK; the
   coordinator must be given with --coordinator or ATTNLAB_COORDINATOR.
4. Cloud TPU VM pod (`gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd attnlab &&
   .venv/bin/python -m launch.multihost --auto -- .venv/bin/python -m train.main ..."`): JAX
   reads the pod's metadata itself, so only `--multihost_auto` is appended (train.main then calls
   `jax.distributed.initialize()` without arguments). TPU_WORKER_* variables imply `--auto`.

GPU cluster without SLURM: on host i of N, run
  python -m launch.multihost --coordinator=HOST0:12355 --num_processes=N --process_id=i -- CMD...
Add `--dry_run` to print the final command instead of running it.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Mapping, Sequence

_PORT_BASE = 61440  # SLURM port range 61440..65535, the same rule jax's SlurmCluster uses.


def first_slurm_host(nodelist: str) -> str:
  """First hostname of a SLURM node list: 'gpu[003-007,9],cpu1' -> 'gpu003'."""
  nodelist = nodelist.strip()
  if not nodelist:
    raise ValueError('empty SLURM node list')
  head = nodelist.split(',', 1)[0] if '[' not in nodelist.split(',', 1)[0] else nodelist
  if '[' not in head:
    return head
  prefix, rest = head.split('[', 1)
  first = rest.split(']', 1)[0].split(',', 1)[0].split('-', 1)[0]
  return prefix + first


def slurm_values(env: Mapping[str, str]) -> dict | None:
  needed = ('SLURM_JOB_ID', 'SLURM_NTASKS', 'SLURM_PROCID')
  if not all(k in env for k in needed):
    return None
  nodelist = env.get('SLURM_STEP_NODELIST') or env.get('SLURM_JOB_NODELIST')
  if not nodelist:
    return None
  port = _PORT_BASE + int(env['SLURM_JOB_ID']) % 4096
  return {
    'coordinator': f'{first_slurm_host(nodelist)}:{port}',
    'num_processes': int(env['SLURM_NTASKS']),
    'process_id': int(env['SLURM_PROCID']),
  }


def ompi_values(env: Mapping[str, str]) -> dict | None:
  if 'OMPI_COMM_WORLD_SIZE' not in env or 'OMPI_COMM_WORLD_RANK' not in env:
    return None
  return {
    'num_processes': int(env['OMPI_COMM_WORLD_SIZE']),
    'process_id': int(env['OMPI_COMM_WORLD_RANK']),
  }


def is_tpu_vm(env: Mapping[str, str]) -> bool:
  """Cloud TPU VMs set TPU_* variables or ship libtpu; JAX then finds its peers by itself."""
  return any(
    k in env
    for k in ('TPU_WORKER_HOSTNAMES', 'TPU_WORKER_ID', 'TPU_ACCELERATOR_TYPE', 'CLOUD_TPU_TASK_ID')
  )


def resolve(explicit: Mapping[str, object], env: Mapping[str, str]) -> dict:
  """{'coordinator', 'num_processes', 'process_id'} or {'auto': True} for a TPU pod."""
  if explicit.get('auto'):
    return {'auto': True}
  values = {
    'coordinator': env.get('ATTNLAB_COORDINATOR'),
    'num_processes': env.get('ATTNLAB_NUM_PROCESSES'),
    'process_id': env.get('ATTNLAB_PROCESS_ID'),
  }
  values = {k: v for k, v in values.items() if v not in (None, '')}
  values.update({k: v for k, v in explicit.items() if v not in (None, '')})
  for found in (slurm_values(env), ompi_values(env)):
    if found:
      for k, v in found.items():
        values.setdefault(k, v)
  if not values and is_tpu_vm(env):
    return {'auto': True}
  missing = [k for k in ('coordinator', 'num_processes', 'process_id') if k not in values]
  if missing:
    raise ValueError(
      f'multihost: cannot tell {missing} from the environment (no SLURM/Open MPI/TPU variables); '
      'pass --coordinator=HOST:PORT --num_processes=N --process_id=I'
    )
  out = {
    'coordinator': str(values['coordinator']),
    'num_processes': int(values['num_processes']),
    'process_id': int(values['process_id']),
  }
  if ':' not in out['coordinator']:
    raise ValueError(f'multihost: coordinator {out["coordinator"]!r} needs a port, e.g. HOST:12355')
  if not 0 <= out['process_id'] < out['num_processes']:
    raise ValueError(
      f'multihost: process_id {out["process_id"]} outside 0..{out["num_processes"] - 1}'
    )
  return out


def distributed_flags(values: Mapping) -> list[str]:
  """The train.main flags for these values."""
  if values.get('auto'):
    return ['--multihost_auto']
  return [
    f'--coordinator_address={values["coordinator"]}',
    f'--num_processes={values["num_processes"]}',
    f'--process_id={values["process_id"]}',
  ]


def parse_args(argv: Sequence[str]) -> tuple[dict, bool, list[str]]:
  """Own flags before '--', the command after it."""
  argv = list(argv)
  if '--' not in argv:
    raise ValueError(
      'usage: python -m launch.multihost [--coordinator=H:P --num_processes=N '
      '--process_id=I | --auto] [--dry_run] -- python -m train.main ...'
    )
  cut = argv.index('--')
  own, command = argv[:cut], argv[cut + 1 :]
  if not command:
    raise ValueError('multihost: no command after "--"')
  explicit, dry_run = {}, False
  for arg in own:
    key, _, value = arg.lstrip('-').partition('=')
    if key == 'dry_run':
      dry_run = True
    elif key == 'auto':
      explicit['auto'] = True
    elif key in ('coordinator', 'num_processes', 'process_id') and value:
      explicit[key] = value
    else:
      raise ValueError(
        f'multihost: unknown flag {arg!r}; valid: --coordinator=H:P, '
        '--num_processes=N, --process_id=I, --auto, --dry_run'
      )
  return explicit, dry_run, command


def main(argv: Sequence[str]) -> None:
  try:
    explicit, dry_run, command = parse_args(argv)
    command = command + distributed_flags(resolve(explicit, os.environ))
  except ValueError as e:
    raise SystemExit(str(e)) from None
  if dry_run:
    print(shlex.join(command))
    return
  sys.stdout.flush()
  os.execvp(command[0], command)


if __name__ == '__main__':
  main(sys.argv[1:])

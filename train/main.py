r"""Train a model from a config; resumes from WORKDIR automatically.

  python -m train.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

With `--config.patience=P` training stops once P validations in a row did not improve
(train/early_stopping.py: WORKDIR/stopped.json says why; a relaunch trains no further).
One writer per workdir: a second train.main on the same DIR is refused (train/layout.py).

Multi-host: run the same command on every host with `--coordinator_address=H:P
--num_processes=N --process_id=I` (launch/multihost.py adds them), or `--multihost_auto` where
JAX finds the cluster itself (SLURM, Cloud TPU).

This module is the command line only: the loop is train/loop.py, process set-up train/runtime.py.
"""

from absl import flags
from ml_collections import config_flags

from train import cli
from train import config_io
from train import loop
from train import runtime

FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'configs/NAME.py[:ARG]', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Run directory: config, tokenizer, checkpoints, tb/.')
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (multi-host).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host).')
  flags.DEFINE_integer('process_id', None, 'This process (multi-host).')
  flags.DEFINE_bool('multihost_auto', False, 'jax.distributed.initialize() with auto-detection.')
  runtime.define_cpu_devices_flag()


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  try:
    config_io.validate(config)  # before anything is built or compiled
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  distributed = FLAGS.coordinator_address or FLAGS.multihost_auto or config.get('distributed')
  spec = '1' if distributed and FLAGS.cpu_devices == 'auto' else FLAGS.cpu_devices
  try:
    runtime.use_cpu_devices(spec, config)  # before anything starts the backend
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  runtime.setup_runtime()
  runtime.maybe_initialize_distributed(
    config,
    coordinator_address=FLAGS.coordinator_address,
    num_processes=FLAGS.num_processes,
    process_id=FLAGS.process_id,
    auto=FLAGS.multihost_auto,
  )
  loop.train_and_evaluate(config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main, define_flags=define_flags, required=('config', 'workdir'), huge_pages=True)

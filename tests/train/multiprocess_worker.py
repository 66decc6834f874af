"""One process of the two-process test: `python -m tests.train.multiprocess_worker PORT ID N OUT`.

Process ID of N feeds its rows of a fixed 8-row global batch; ID = -1 runs alone with the whole
batch. Each writes {loss, grad_norm, param_sum} after two jitted train steps to OUT.
"""

import json
import sys

import jax

port, pid, nproc, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if pid >= 0:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=nproc, process_id=pid)

import numpy as np  # pylint: disable=g-import-not-at-top

from configs import common  # pylint: disable=g-import-not-at-top
from tests.train import toy  # pylint: disable=g-import-not-at-top
from train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
from train import trainer  # pylint: disable=g-import-not-at-top

cfg = common.base_config()
cfg.optim.warmup_steps = 2
cfg.mesh.data, cfg.mesh.fsdp = -1, 2
module = toy.ToySeq2Seq()
tx, _ = trainer.make_optimizer(cfg)
mesh = mesh_lib.make_mesh(cfg.mesh)
full = toy.make_batch(rows=8)
rows = 8 // max(nproc, 1)
local = full if pid < 0 else {k: v[pid * rows : (pid + 1) * rows] for k, v in full.items()}
state, shardings = trainer.create_train_state(module, tx, cfg, mesh, full)
step = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
for _ in range(2):
  state, metrics = step(state, mesh_lib.global_batch(local, mesh))
from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

params = multihost_utils.process_allgather(state.params, tiled=True) if pid >= 0 else state.params
result = {
  'loss': float(metrics['loss']),
  'grad_norm': float(metrics['grad_norm']),
  'param_sum': float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(params))),
  'devices': jax.device_count(),
  'processes': jax.process_count(),
}
with open(out, 'w') as f:
  json.dump(result, f)

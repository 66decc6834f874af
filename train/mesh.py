"""The device mesh ('data', 'fsdp', 'tensor') and how params and batches are laid out on it."""

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AXES = ('data', 'fsdp', 'tensor')


def mesh_shape(mesh_cfg, num_devices):
  """(data, fsdp, tensor) sizes; data = -1 takes every device the other two leave."""
  fsdp, tensor, data = int(mesh_cfg.fsdp), int(mesh_cfg.tensor), int(mesh_cfg.data)
  if data == -1:
    if num_devices % (fsdp * tensor):
      raise ValueError(
        f'{num_devices} devices cannot be split into mesh.fsdp={fsdp} x '
        f'mesh.tensor={tensor}; pick sizes whose product divides {num_devices}'
      )
    data = num_devices // (fsdp * tensor)
  if data * fsdp * tensor != num_devices:
    raise ValueError(
      f'mesh data={data} x fsdp={fsdp} x tensor={tensor} = '
      f'{data * fsdp * tensor} devices, but {num_devices} are available; '
      f'set --config.mesh.data=-1 to use them all'
    )
  return data, fsdp, tensor


def make_mesh(mesh_cfg, devices=None):
  """Mesh with Auto axis types: XLA propagates shardings from the annotated inputs/outputs."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_sharding(mesh):
  """Rows split over data x fsdp; every other dimension replicated."""
  return NamedSharding(mesh, P(('data', 'fsdp')))


def logical_shardings(abstract_boxed, mesh, rules):
  """NamedShardings for a tree of (possibly) nn.LogicallyPartitioned leaves; others replicated."""
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, tuple(tuple(r) for r in rules))


def global_batch(batch, mesh, process_count=None):
  """Per-process numpy batch -> global jax.Arrays sharded by rows over data x fsdp.

  Each process passes its own rows (batch_size // process_count of them); the global batch
  is their concatenation in process order.
  """
  process_count = jax.process_count() if process_count is None else process_count
  sharding = batch_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * process_count,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(put, batch)

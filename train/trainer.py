"""TrainState, the loss, the optimizer, and train_step / eval_step as pure functions.

Everything here is a function of its arguments (no globals, no hidden RNG), so the same
step can be jitted for one CPU or a multi-host mesh and compared exactly in tests.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec as P

import model
from configs import common
from train import config_io
from train import loss as loss_lib
from train import mesh as mesh_lib


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # unboxed parameter tree
  opt_state: Any  # optax state (same layout as params for Adam moments)


# ----------------------------------------------------------------------------- optimizer


def learning_rate_schedule(optim_cfg, total_steps):
  """Linear warmup to `learning_rate`, then rsqrt (paper), cosine to 0, or constant.

  rsqrt: lr(s) = peak * min(s / w, sqrt(w / s)), which is the paper's
  d_model^-0.5 * min(s^-0.5, s * w^-1.5) with peak = (d_model * w)^-0.5.
  """
  peak, warmup = float(optim_cfg.learning_rate), max(int(optim_cfg.warmup_steps), 1)
  kind = optim_cfg.schedule

  def schedule(count):
    s = jnp.asarray(count, jnp.float32) + 1.0  # optax counts from 0; the paper from 1
    ramp = s / warmup
    if kind == 'rsqrt':
      return peak * jnp.minimum(ramp, jnp.sqrt(warmup / s))
    if kind == 'constant':
      return peak * jnp.minimum(ramp, 1.0)
    if kind == 'cosine':
      frac = jnp.clip((s - warmup) / max(total_steps - warmup, 1), 0.0, 1.0)
      return peak * jnp.where(s < warmup, ramp, 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
    raise ValueError(f'optim.schedule={kind!r}; valid: rsqrt, cosine, constant')

  return schedule


def make_optimizer(config):
  """(optax transform, schedule): clip -> Adam(0.9, 0.98, 1e-9) [-> decoupled weight decay]."""
  o = config.optim
  schedule = learning_rate_schedule(o, config.total_steps)
  parts = []
  if o.clip_norm and o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  parts.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps))
  if o.weight_decay:
    # Matrices only: decaying biases and norm scales just fights the normalisation.
    mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule


# ----------------------------------------------------------------------------- loss

cross_entropy_sums = loss_lib.cross_entropy_sums  # re-exported: the contract's name


def fused_loss_chunk(config) -> int:
  """Tokens per chunk of the fused output projection + loss; 0 when the model cannot use it
  (untied output, the RNN baseline) or the config turns it off."""
  m = config.model
  if (
    not common.opt(m, 'tie_output', section='model')
    or common.opt(m, 'arch', section='model') == 'rnn'
  ):
    return 0
  return int(common.opt(config, 'loss_chunk_tokens', section=''))


def _apply(module, params, batch, rng, deterministic):
  return module.apply({'params': params}, batch, deterministic=deterministic, rngs={'dropout': rng})


def loss_sums_and_grads(params, batch, rng, *, module, label_smoothing, chunk_tokens=0):
  """Gradient of the *summed* token loss (normalised later, once over all micro-batches).

  chunk_tokens > 0: the tied output projection and the loss run fused, in chunks of about that
  many tokens (train/loss.py); same value and gradient, without the [B, T, V] logits.
  """

  def f(p):
    if chunk_tokens:
      hidden, table = module.apply(
        {'params': p}, batch, deterministic=False, rngs={'dropout': rng}, return_hidden=True
      )
      sums = loss_lib.fused_cross_entropy_sums(
        hidden, table, batch['targets'], batch['weights'], label_smoothing, chunk_tokens
      )
      vocab = table.shape[0]
    else:
      logits = _apply(module, p, batch, rng, deterministic=False)
      sums = cross_entropy_sums(logits, batch['targets'], batch['weights'], label_smoothing)
      vocab = logits.shape[-1]
    entropy = loss_lib.smoothing_entropy(label_smoothing, vocab)  # of the smoothed labels
    return sums['loss'], {**sums, 'kl': sums['loss'] - entropy * sums['tokens']}

  (_, sums), grads = jax.value_and_grad(f, has_aux=True)(params)
  return sums, grads


def loss_and_grads(params, batch, rng, *, module, label_smoothing, accum_steps=1, chunk_tokens=0):
  """Mean loss per non-padding target token and its gradient, over `accum_steps` slices.

  Micro-batch a takes rows a, a + A, a + 2A, ... so each slice stays spread over every
  device of the data axes. Sums are accumulated and divided once by the total token count:
  the result equals the full-batch gradient exactly, whatever the padding per slice.
  """
  fn = functools.partial(
    loss_sums_and_grads, module=module, label_smoothing=label_smoothing, chunk_tokens=chunk_tokens
  )
  if accum_steps == 1:
    sums, grads = fn(params, batch, rng)
  else:

    def split(x):
      x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
      return jnp.swapaxes(x, 0, 1)

    micro = jax.tree.map(split, batch)

    def body(carry, inputs):
      i, mb = inputs
      s, g = fn(params, mb, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (s, g)), None

    zeros = jax.tree.map(
      jnp.zeros_like, (jax.eval_shape(lambda: fn(params, jax.tree.map(lambda x: x[0], micro), rng)))
    )
    (sums, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
  denom = jnp.maximum(sums['tokens'], 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  metrics = {
    'loss': sums['loss'] / denom,  # label-smoothed cross-entropy, as fairseq and T2T log it
    'loss_kl': sums['kl'] / denom,  # KL divergence to the smoothed labels (0 = perfect fit)
    'nll': sums['nll'] / denom,
    'accuracy': sums['correct'] / denom,
    'tokens': sums['tokens'],
  }
  return metrics, grads


# ----------------------------------------------------------------------------- steps

DROPOUT_RNG_IMPLS = config_io.CHOICES['dropout_rng_impl']  # the first is the default


def dropout_rng(seed, step, impl=DROPOUT_RNG_IMPLS[0]):
  """Dropout key for a step: a pure function of (seed, step), so resumes replay exactly.

  `impl` picks the bit generator. threefry2x32 (JAX's default) gives the same bits whatever the
  sharding. `rbg` / `unsafe_rbg` use XLA's RngBitGenerator, meant to be cheaper on accelerators
  (not measured here), with bits that may differ across shardings, backends and JAX versions
  (each is still a deterministic function of seed and step). On CPU they are slower: dropout bits
  took 15% (rbg) and 18% (unsafe_rbg) of the small config's op time against threefry's 5-6%
  (`python -m launch.benchmark ... --profile --sweep='dropout_rng_impl=threefry2x32;...'`).
  """
  if impl not in DROPOUT_RNG_IMPLS:
    raise ValueError(
      f'dropout_rng_impl={impl!r} is not valid; choose one of: {", ".join(DROPOUT_RNG_IMPLS)}'
    )
  return jax.random.fold_in(jax.random.key(seed + 1, impl=impl), step)


def train_step(state, batch, *, module, tx, config):
  """One optimizer step. Returns (new_state, metrics) with metrics as scalars."""
  # .get: configs written before the key existed resume with JAX's default generator.
  rng = dropout_rng(config.seed, state.step, common.opt(config, 'dropout_rng_impl', section=''))
  metrics, grads = loss_and_grads(
    state.params,
    batch,
    rng,
    module=module,
    label_smoothing=float(config.optim.label_smoothing),
    accum_steps=int(config.optim.grad_accum_steps),
    chunk_tokens=fused_loss_chunk(config),
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics['grad_norm'] = optax.global_norm(grads)
  metrics['param_norm'] = optax.global_norm(params)
  metrics['lr'] = learning_rate_schedule(config.optim, config.total_steps)(state.step)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params, batch, module):
  """Token sums of NLL (no smoothing), weight and correct predictions for one batch."""
  logits = _apply(module, params, batch, jax.random.PRNGKey(0), deterministic=True)
  return cross_entropy_sums(logits, batch['targets'], batch['weights'], 0.0)


_eval_step_jit = jax.jit(eval_step, static_argnums=2)


def eval_loss(module, params, batches, config=None):
  """{'loss', 'tokens', 'accuracy'}: token-weighted mean cross-entropy without smoothing."""
  del config  # part of the contract: room for eval-time options without changing callers
  totals = None
  for batch in batches:
    b = {k: v for k, v in batch.items() if k not in ('index', 'length')}
    sums = jax.device_get(_eval_step_jit(params, b, module))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  if totals is None or totals['tokens'] == 0:
    raise ValueError('eval_loss got no target tokens: the evaluation batches are empty')
  n = float(totals['tokens'])
  return {
    'loss': float(totals['nll']) / n,
    'tokens': int(n),
    'accuracy': float(totals['correct']) / n,
  }


# ----------------------------------------------------------------------------- state on a mesh


def _init_boxed(module, tx, batch, rng):
  params = module.init({'params': rng, 'dropout': rng}, batch, deterministic=True)['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def create_train_state(module, tx, config, mesh, example_batch):
  """Initialises the state directly in its sharded layout. Returns (state, shardings).

  Shapes and logical axes come from an abstract init (no FLOPs, no memory); params, Adam
  moments etc. then materialise already split over the mesh by config.mesh_rules.
  """
  rng = jax.random.PRNGKey(config.seed)
  batch = {k: jnp.asarray(v) for k, v in example_batch.items()}
  init = functools.partial(_init_boxed, module, tx)
  abstract = jax.eval_shape(init, batch, rng)
  shardings = mesh_lib.logical_shardings(abstract, mesh, config.mesh_rules)
  replicated = NamedSharding(mesh, P())
  state = jax.jit(
    lambda b, r: nn.unbox(init(b, r)),
    in_shardings=(replicated, replicated),
    out_shardings=shardings,
  )(batch, rng)
  return state, shardings


def jit_train_step(module, tx, config, mesh, state_shardings):
  """train_step under one jax.jit: explicit shardings, state donated (updated in place)."""
  step = functools.partial(train_step, module=module, tx=tx, config=config)
  data = mesh_lib.batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())
  return jax.jit(
    step,
    in_shardings=(state_shardings, data),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
  )


@dataclasses.dataclass
class Training:
  """What training and benchmarking both build from a config: one function, `setup`."""

  module: Any
  tx: Any
  state: TrainState
  shardings: Any
  step_fn: Any


def setup(config, mesh, example_batch) -> Training:
  """Model, optimizer, sharded initial state and the jitted train step of `config` on `mesh`
  (`example_batch` gives the shapes). train.loop restores into `state`; launch.benchmark
  times `step_fn`."""
  module = model.build_model(config.model)
  tx, _ = make_optimizer(config)
  state, shardings = create_train_state(module, tx, config, mesh, example_batch)
  return Training(module, tx, state, shardings, jit_train_step(module, tx, config, mesh, shardings))

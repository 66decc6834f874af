"""trainer.py: loss vs a NumPy reference, schedules vs the paper, accumulation and sharding
invariance (2x2x2 mesh of simulated devices == one device)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from train import mesh as mesh_lib
from train import trainer
from tests.train import toy


def toy_config(**optim):
  c = common.base_config()
  c.total_steps = 100
  c.optim.warmup_steps = 10
  c.optim.learning_rate = 1e-2
  for k, v in optim.items():
    c.optim[k] = v
  return c


def np_smoothed_ce(logits, targets, weights, eps):
  v = logits.shape[-1]
  logp = (
    logits
    - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    - logits.max(-1, keepdims=True)
  )
  q = np.full(logits.shape, eps / (v - 1))
  np.put_along_axis(q, targets[..., None], 1 - eps, -1)
  ce = -(q * logp).sum(-1)  # cross-entropy H(q, p): what fairseq and T2T log
  # fairseq's label_smoothed_nll_loss: (1 - eps - eps_i) * nll + eps_i * sum_k(-log p_k).
  eps_i = eps / (v - 1)
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(ce, (1 - eps - eps_i) * nll + eps_i * -logp.sum(-1), rtol=1e-5)
  return (ce * weights).sum(), (
    -np.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights
  ).sum()


@pytest.mark.parametrize('eps', [0.0, 0.1])
def test_cross_entropy_matches_numpy_one_hot(eps):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, (3, 5))
  weights = (rng.random((3, 5)) > 0.3).astype(np.float32)
  got = trainer.cross_entropy_sums(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), eps
  )
  want_loss, want_nll = np_smoothed_ce(logits.astype(np.float64), targets, weights, eps)
  np.testing.assert_allclose(got['loss'], want_loss, rtol=1e-5)
  np.testing.assert_allclose(got['nll'], want_nll, rtol=1e-5)
  assert got['tokens'] == weights.sum()
  assert got['correct'] == (weights * (logits.argmax(-1) == targets)).sum()
  # d loss / d logits = w * (softmax - q), q the smoothed label distribution.
  grad = jax.grad(
    lambda z: trainer.cross_entropy_sums(z, jnp.asarray(targets), jnp.asarray(weights), eps)['loss']
  )
  z = logits.astype(np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = np.full(z.shape, eps / (z.shape[-1] - 1))
  np.put_along_axis(q, targets[..., None], 1 - eps, -1)
  np.testing.assert_allclose(
    grad(jnp.asarray(logits)), weights[..., None] * (p - q), rtol=1e-4, atol=1e-6
  )


def test_smoothed_loss_is_minimal_at_the_smoothed_target():
  # The logged loss is the cross-entropy H(q, p): at p = q it is q's entropy (Gibbs), its minimum,
  # and the gradient there is zero.
  eps, v = 0.1, 7
  q = np.full((1, 1, v), eps / (v - 1))
  q[0, 0, 3] = 1 - eps
  f = lambda z: trainer.cross_entropy_sums(z, jnp.array([[3]]), jnp.ones((1, 1)), eps)['loss']
  z = jnp.log(jnp.asarray(q, jnp.float32))
  np.testing.assert_allclose(float(f(z)), -(q * np.log(q)).sum(), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(f)(z), 0.0, atol=1e-6)
  noise = jax.random.normal(jax.random.key(0), z.shape) * 0.1
  assert float(f(z + noise)) > float(f(z))


def test_rsqrt_schedule_is_the_papers_formula():
  d, w = 512, 4000
  cfg = toy_config(warmup_steps=w, learning_rate=(d * w) ** -0.5, schedule='rsqrt').optim
  sched = trainer.learning_rate_schedule(cfg, 100000)
  for s in (1, 100, 3999, 4000, 4001, 20000, 100000):
    paper = d**-0.5 * min(s**-0.5, s * w**-1.5)
    np.testing.assert_allclose(sched(s - 1), paper, rtol=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_zero():
  cfg = toy_config(warmup_steps=10, learning_rate=1.0, schedule='cosine').optim
  sched = trainer.learning_rate_schedule(cfg, 110)
  np.testing.assert_allclose(sched(4), 0.5, rtol=1e-6)
  np.testing.assert_allclose(sched(9), 1.0, rtol=1e-6)
  np.testing.assert_allclose(sched(59), 0.5, atol=1e-6)
  np.testing.assert_allclose(sched(109), 0.0, atol=1e-6)


def test_gradient_accumulation_equals_full_batch():
  module = toy.ToySeq2Seq(dropout=0.0)
  batch = toy.make_batch(rows=8)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), batch)['params']
  params = jax.tree.map(
    lambda x: x.value if hasattr(x, 'value') else x, params, is_leaf=lambda x: hasattr(x, 'names')
  )
  # jitted: one compile per accum_steps instead of a hundred eager op compiles
  f = jax.jit(
    functools.partial(trainer.loss_and_grads, module=module, label_smoothing=0.1),
    static_argnames='accum_steps',
  )
  m1, g1 = f(params, batch, jax.random.PRNGKey(1))
  m4, g4 = f(params, batch, jax.random.PRNGKey(1), accum_steps=4)
  np.testing.assert_allclose(m1['loss'], m4['loss'], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g1, g4)


def _one_step(mesh_shape, devices):
  cfg = toy_config()
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = mesh_shape
  mesh = mesh_lib.make_mesh(cfg.mesh, devices)
  module = toy.ToySeq2Seq()
  tx, _ = trainer.make_optimizer(cfg)
  batch = toy.make_batch(rows=8)
  state, shardings = trainer.create_train_state(module, tx, cfg, mesh, batch)
  grads_fn = jax.jit(
    functools.partial(trainer.loss_and_grads, module=module, label_smoothing=0.1),
    in_shardings=(shardings.params, mesh_lib.batch_sharding(mesh), None),
  )
  metrics, grads = grads_fn(state.params, mesh_lib.global_batch(batch, mesh), jax.random.PRNGKey(3))
  step = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
  state, step_metrics = step(state, mesh_lib.global_batch(batch, mesh))
  return jax.device_get((metrics, grads, state.params, step_metrics)), state


def test_mesh_2x2x2_matches_single_device():
  assert jax.device_count() >= 8, 'tests/conftest.py should give 8 simulated CPU devices'
  (m1, g1, p1, s1), _ = _one_step((1, 1, 1), jax.devices()[:1])
  (m8, g8, p8, s8), state8 = _one_step((2, 2, 2), jax.devices()[:8])
  # The params really are spread over the mesh, not replicated.
  assert len(state8.params['w1'].sharding.device_set) == 8
  assert not state8.params['w1'].sharding.is_fully_replicated
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-6)
  tight = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  jax.tree.map(tight, g1, g8)
  jax.tree.map(tight, p1, p8)
  np.testing.assert_allclose(s1['grad_norm'], s8['grad_norm'], rtol=1e-5)


def test_train_steps_reduce_loss_and_eval_loss_matches_reference():
  cfg = toy_config()
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:2])
  module = toy.ToySeq2Seq()
  tx, _ = trainer.make_optimizer(cfg)
  batch = toy.make_batch(rows=8)
  state, shardings = trainer.create_train_state(module, tx, cfg, mesh, batch)
  before = trainer.eval_loss(module, state.params, [batch], cfg)
  logits = np.asarray(module.apply({'params': state.params}, batch), np.float64)
  _, nll = np_smoothed_ce(logits, batch['targets'], batch['weights'], 0.0)
  np.testing.assert_allclose(before['loss'], nll / batch['weights'].sum(), rtol=1e-5)
  assert before['tokens'] == int(batch['weights'].sum())
  step = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
  for _ in range(30):
    state, metrics = step(state, mesh_lib.global_batch(batch, mesh))
  assert int(state.step) == 30
  after = trainer.eval_loss(module, state.params, [batch], cfg)
  assert after['loss'] < 0.7 * before['loss']


def test_dropout_rng_threefry_is_the_old_raw_key_and_rbg_is_a_real_alternative():
  # threefry2x32 (the default) gives the bits runs written before the option existed used, so
  # they resume exactly.
  old = jax.random.fold_in(jax.random.PRNGKey(1), 7)
  np.testing.assert_array_equal(jax.random.key_data(trainer.dropout_rng(0, 7)), old)
  with pytest.raises(ValueError, match='threefry2x32, rbg, unsafe_rbg'):
    trainer.dropout_rng(0, 7, 'philox')

  def step_params(impl):
    cfg = toy_config()
    cfg.dropout_rng_impl = impl
    mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:1])
    module = toy.ToySeq2Seq(dropout=0.5)
    tx, _ = trainer.make_optimizer(cfg)
    batch = toy.make_batch(rows=8)
    state, shardings = trainer.create_train_state(module, tx, cfg, mesh, batch)
    step = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
    state, metrics = step(state, mesh_lib.global_batch(batch, mesh))
    assert np.isfinite(float(metrics['loss']))
    return np.asarray(state.params['w1'])

  a, b, c = step_params('threefry2x32'), step_params('unsafe_rbg'), step_params('unsafe_rbg')
  np.testing.assert_array_equal(b, c)  # still a pure function of (seed, step)
  assert not np.array_equal(a, b)  # other dropout masks, so other gradients


# Compiling the tiny model costs ~10 s per scheme on 2 cores: two run by default, all with -m slow.
@pytest.mark.parametrize(
  'position',
  [
    'sinusoidal',
    'shaw',
    *(
      pytest.param(p, marks=pytest.mark.slow) for p in ('none', 'learned', 't5', 'rotary', 'alibi')
    ),
  ],
)
def test_one_step_of_the_tiny_config_for_every_position_scheme(position):
  import model
  from configs import multi30k

  cfg = multi30k.get_config(f'size=tiny,position={position}')
  cfg.model.vocab_size = cfg.data.vocab_size
  cfg.model.dropout = 0.0
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:1])  # 2x2x2 is tested above
  module = model.build_model(cfg.model)
  tx, _ = trainer.make_optimizer(cfg)
  batch = toy.make_batch(rows=8)
  state, shardings = trainer.create_train_state(module, tx, cfg, mesh, batch)
  before = jax.device_get(state.params)
  step = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
  state, metrics = step(state, mesh_lib.global_batch(batch, mesh))
  loss = float(metrics['loss'])
  # Near-uniform predictions at init: smoothed loss is about log(V) minus the target entropy.
  assert np.isfinite(loss) and 3.0 < loss < 2 * np.log(cfg.model.vocab_size)
  assert int(state.step) == 1
  after = jax.device_get(state.params)
  changed = [
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
  ]
  assert all(changed)

"""The flax `examples/wmt` Transformer as `launch.peer` times it: built as its `train.py`'s
`train_and_evaluate` builds it, from the code `launch.peer_source` unpacks at run time (never
committed here), and timed the way `launch.measure` times attnlab."""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import jax_utils
from flax import linen as nn
from flax.training import common_utils

from launch import measure

NO_EOS = -1  # an id no token has: the peer's beams never finish before max_decode_len


def peer_batch(batch):
  """attnlab's packed batch -> the keys the peer's train_step reads."""
  return {
    'inputs': batch['inputs'],
    'targets': batch['targets'],
    'inputs_position': batch['inputs_position'],
    'targets_position': batch['targets_position'],
    'inputs_segmentation': batch['inputs_segment'],
    'targets_segmentation': batch['targets_segment'],
  }


def _check_one_num_layers(m):
  """The peer has one num_layers for both stacks of an encoder-decoder; other models fail here."""
  enc = m.get('num_encoder_layers') or m.num_layers
  dec = m.get('num_decoder_layers') or m.num_layers
  if enc != dec or m.arch != 'encoder_decoder':
    raise ValueError(
      f'the peer has one num_layers for both stacks of an encoder-decoder; '
      f'got arch={m.arch}, {enc}+{dec} layers'
    )


class Peer:
  """The flax examples/wmt Transformer, built as its train.py's `train_and_evaluate` builds it."""

  def __init__(self, peer, config, batches, decode_len, beam_size):

    _check_one_num_layers(config.model)
    self.p, self.shard, self.tohost = peer, common_utils.shard, peer.tohost
    self.n_dev = jax.local_device_count()
    rows, length = batches[0]['targets'].shape
    self.max_decode_len = decode_len + 1
    self.train_config = self._transformer_config(config.model, length)
    eval_config = self.train_config.replace(deterministic=True)
    predict_config = self.train_config.replace(deterministic=True, decode=True)
    rng, lr_fn = self._init_state(config, eval_config, rows, length)
    self._pmap_steps(config, lr_fn, predict_config, beam_size)
    self.dropout_rngs = jax.random.split(rng, self.n_dev)
    self._put_batches(batches)
    self._warm_up()

  def _transformer_config(self, m, length):
    """The peer's TransformerConfig for training, as train_and_evaluate sets it."""
    return self.p.models.TransformerConfig(
      vocab_size=int(m.vocab_size),
      output_vocab_size=int(m.vocab_size),
      share_embeddings=True,
      logits_via_embedding=True,
      dtype=jnp.bfloat16 if m.dtype == 'bfloat16' else jnp.float32,
      emb_dim=m.d_model,
      num_heads=m.num_heads,
      num_layers=m.num_layers,
      qkv_dim=m.d_model,
      mlp_dim=m.d_ff,
      max_len=max(256, length, self.max_decode_len),
      dropout_rate=m.dropout,
      attention_dropout_rate=m.attention_dropout,
      deterministic=False,
      decode=False,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.normal(stddev=1e-6),
    )

  def _init_state(self, config, eval_config, rows, length):
    """Initialises, counts and replicates the train state; returns (dropout rng, lr schedule)."""
    rng, init_rng = jax.random.split(jax.random.key(config.seed))
    module = self.p.models.Transformer(eval_config)
    variables = jax.jit(module.init)(
      init_rng, jnp.ones((rows, length), jnp.float32), jnp.ones((rows, length), jnp.float32)
    )
    lr_fn = self.p.create_learning_rate_schedule(
      learning_rate=config.optim.learning_rate, warmup_steps=max(1, config.optim.warmup_steps)
    )
    state = self.p.TrainState.create(
      apply_fn=module.apply,
      params=variables['params'],
      tx=optax.adamw(learning_rate=lr_fn, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0),
      dynamic_scale=None,
    )
    self.params_count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
    self.state = jax_utils.replicate(state)
    return rng, lr_fn

  def _pmap_steps(self, config, lr_fn, predict_config, beam_size):
    """The peer's train_step, initialize_cache and predict_step, each under jax.pmap."""
    self.train_step = jax.pmap(
      functools.partial(
        self.p.train_step,
        config=self.train_config,
        learning_rate_fn=lr_fn,
        label_smoothing=config.optim.label_smoothing,
      ),
      axis_name='batch',
      donate_argnums=(0,),
    )
    self.init_cache = jax.pmap(
      functools.partial(
        self.p.initialize_cache, max_decode_len=self.max_decode_len, config=predict_config
      ),
      axis_name='batch',
    )
    self.beam_size = beam_size
    self.pred_steps = {  # by beam width; 1 is the peer's greedy (it has no other decoder)
      width: jax.pmap(
        functools.partial(self.p.predict_step, config=predict_config, beam_size=width),
        axis_name='batch',
        static_broadcasted_argnums=(3, 4),
      )
      for width in {beam_size, 1}
    }

  def _put_batches(self, batches):
    """Batches on the devices before timing, as attnlab's."""
    put = jax.pmap(lambda b: b)
    self.batches = batches
    self.device_batches = [
      put(self.shard(jax.tree_util.tree_map(np.asarray, peer_batch(b)))) for b in batches
    ]
    jax.block_until_ready(self.device_batches)

  def _warm_up(self):
    """Two warm-up steps; `compile_s` is the first one's time."""
    t0 = time.perf_counter()
    # Two warm-up steps: the second compiles again, as the replicated state from
    # jax_utils.replicate and the one pmap returns are laid out differently (a one-time cost
    # in train.py's loop too, never a steady-state one).
    for i in range(2):
      self.state, metrics = self.train_step(
        self.state, self.device_batches[0], dropout_rng=self.dropout_rngs
      )
      jax.block_until_ready(metrics)
      if i == 0:
        self.compile_s = time.perf_counter() - t0

  def step(self, i):
    """One train step on batch i % len(batches), run to completion (`measure.TrainStepper`'s
    counterpart)."""
    b = self.device_batches[i % len(self.device_batches)]
    self.state, self.metrics = self.train_step(self.state, b, dropout_rng=self.dropout_rngs)
    jax.block_until_ready(self.metrics['loss'])

  def time_train(self, steps, model_cfg, ref=None):
    """Like measure.measure_train: total real target tokens / total step seconds."""
    times, cpu_times, rates = [], [], []
    for i in range(steps):
      t0, c0 = time.perf_counter(), time.process_time()
      self.step(i)
      times.append(time.perf_counter() - t0)
      cpu_times.append(time.process_time() - c0)
      if ref is not None:
        rates.append(ref.rate(0.25 * times[-1]))
    idx = [i % len(self.batches) for i in range(steps)]
    tokens = sum(float(np.sum(self.batches[i]['targets'] > 0)) for i in idx)
    useful = [measure.useful_flops(model_cfg, b) for b in self.batches]
    out = {
      'params': self.params_count,
      'compile_s': self.compile_s,
      'step_s': statistics.median(times),
      'tokens_per_s': tokens / sum(times),
      'flops_per_s': sum(useful[i] for i in idx) / sum(times),
      'loss_sum': float(np.asarray(self.metrics['loss']).sum()),
    }
    if rates:
      wall, cpu = zip(*rates)
      out['mfu'] = statistics.median(useful[i] / t / r for i, t, r in zip(idx, times, wall))
      out['cpu_time_mfu'] = statistics.median(
        useful[i] / t / r for i, t, r in zip(idx, cpu_times, cpu)
      )
    return out

  def translate(self, inputs, beam_size=None):
    """One call as train.py's translate loop makes it: pad to the devices, init cache, predict.
    `beam_size` 1 is greedy as the peer does it: its beam search with one beam."""
    x = np.asarray(inputs)
    n = x.shape[0]
    if n % self.n_dev:
      x = self.p.pad_examples(x, -(-n // self.n_dev) * self.n_dev)
    x = self.shard(x)
    cache = self.init_cache(x)
    pred_step = self.pred_steps[beam_size or self.beam_size]
    out = pred_step(x, self.state.params, cache, NO_EOS, self.max_decode_len)
    return self.tohost(out)[:n]

  def time_decode(self, inputs, repeats, beam_size=None):
    t0 = time.perf_counter()
    tokens = self.translate(inputs, beam_size)  # compiles on the first round
    first = time.perf_counter() - t0
    self.translate(inputs, beam_size)  # and any second compile (argument layouts)
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      self.translate(inputs, beam_size)
      times.append(time.perf_counter() - t0)
    sec = statistics.median(times) if times else first
    n = tokens.shape[0]
    return {
      'seconds': sec,
      'compile_s': max(first - sec, 0.0),
      'sentences_per_s': n / sec,
      'tokens_per_sentence': self.max_decode_len - 1,
      'tokens_per_s': n * (self.max_decode_len - 1) / sec,
    }

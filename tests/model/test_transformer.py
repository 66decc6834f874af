"""Transformer properties for every allowed (attention x position) pair, both architectures.

One jitted function per configuration computes everything the tests compare (compiles dominate
the runtime), cached across the tests that read it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import config as cfg_lib
from tests.xla_flags import CHEAP_OPTIONS

ALLOWED = [
  (a, p) for a in cfg_lib.ATTENTIONS for p in cfg_lib.POSITIONS if p not in cfg_lib.UNSUPPORTED[a]
]
CASES = [(arch, a, p) for arch in ('encoder_decoder', 'decoder_only') for a, p in ALLOWED]
IDS = [f'{arch[:3]}-{a}-{p}' for arch, a, p in CASES]


def tiny_config(arch, attention, position, **kw):
  cfg = dict(
    arch=arch,
    vocab_size=16,
    d_model=16,
    num_heads=4,
    num_layers=1,
    d_ff=16,
    dropout=0.0,
    attention=attention,
    position=position,
    max_len=32,
    shaw_max_distance=2,
    t5_num_buckets=8,
    t5_max_distance=16,
    tie_output=False,
    share_embeddings=False,
  )
  # Vary the structure across cases so GQA, pre-LN, SwiGLU and scan also meet every scheme.
  i = ALLOWED.index((attention, position))
  conv = attention in ('lightconv', 'dynamicconv')
  if attention != 'shared_qk' and not conv:
    cfg['num_kv_heads'] = (4, 2, 1)[i % 3]
  cfg['norm'] = ('post', 'pre')[i % 2]
  cfg['ffn'] = ('relu', 'gelu', 'swiglu')[i % 3]
  cfg['scan_layers'] = i % 4 == 1
  cfg['num_layers'] = 2 if cfg['scan_layers'] or conv else 1
  if conv:  # unrolled: a centred even kernel, then an odd one; scanned: one width
    cfg['conv_kernels'] = (3,) if cfg['scan_layers'] else (2, 3)
  cfg.update(kw)
  return cfg


def _pad(x, width):
  return np.pad(x, ((0, 0), (0, width - x.shape[1])))


def batches():
  """Two (source, target) pairs: packed into one row, as separate rows, and with extra padding."""
  src = [np.array([5, 6, 7, 1]), np.array([8, 9, 1])]
  tgt = [np.array([2, 10, 11, 12]), np.array([2, 13, 14])]  # decoder inputs: distinct ids after bos

  def packed(seqs):
    return (
      np.concatenate(seqs)[None],
      np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(seqs)])[None],
      np.concatenate([np.arange(len(s)) for s in seqs])[None],
    )

  (pi, ps, pp), (pt, pts, ptp) = packed(src), packed(tgt)
  pk = dict(
    inputs=pi,
    inputs_segment=ps,
    inputs_position=pp,
    decoder_inputs=pt,
    targets_segment=pts,
    targets_position=ptp,
  )

  def separate(extra):
    ws, wt = 4 + extra, 4 + extra
    i = np.stack([_pad(s[None], ws)[0] for s in src])
    t = np.stack([_pad(s[None], wt)[0] for s in tgt])
    return dict(
      inputs=i,
      inputs_segment=(i > 0) * 1,
      inputs_position=np.tile(np.arange(ws), (2, 1)),
      decoder_inputs=t,
      targets_segment=(t > 0) * 1,
      targets_position=np.tile(np.arange(wt), (2, 1)),
    )

  as_jnp = lambda d: {k: jnp.asarray(v, jnp.int32) for k, v in d.items()}
  return as_jnp(pk), as_jnp(separate(0)), as_jnp(separate(3))


ENC_DEC = {
  ('dot', 'sinusoidal'),
  ('dot', 't5'),
  ('dot', 'shaw'),
  ('shared_qk', 't5_unscaled'),
  ('shared_qk', 'rotary'),
  ('shared_qk', 'alibi'),
  ('additive', 'learned'),
  ('additive', 't5'),
  ('linear', 'rotary'),
  ('linear', 'none'),
  ('lightconv', 'learned'),
  ('dynamicconv', 'sinusoidal'),
}
# Every pair runs for decoder-only. The encoder-decoder shares the Decoder code (the encoder runs
# once, uncached), so it runs a covering set: every attention kind and every position scheme at
# least once (the full product doubled the suite's longest family for no new code path).
DECODE_CASES = [
  pytest.param(arch, a, p, id=f'{arch[:3]}-{a}-{p}')
  for arch, a, p in CASES
  if arch == 'decoder_only' or (a, p) in ENC_DEC
]


def test_encoder_decoder_cases_cover_every_kind_and_scheme():
  assert {a for a, _ in ENC_DEC} == set(cfg_lib.ATTENTIONS)
  assert {p for _, p in ENC_DEC} == set(cfg_lib.POSITIONS)
  assert ENC_DEC <= set(ALLOWED)


PROP_CASES = (
  [('decoder_only', 'dot', p) for p in cfg_lib.POSITIONS]
  + [('encoder_decoder', 'dot', p) for p in ('t5', 'rotary', 'shaw')]
  + [
    ('decoder_only', a, p)
    for a, p in (('additive', 't5'), ('linear', 'rotary'), ('shared_qk', 'alibi'))
  ]
  + [('encoder_decoder', 'linear', 'sinusoidal')]
  + [('decoder_only', 'lightconv', 'none'), ('encoder_decoder', 'dynamicconv', 'sinusoidal')]
)


def _key(arch, attention, position):
  return tuple(sorted(tiny_config(arch, attention, position).items()))


@functools.lru_cache(maxsize=None)
def decode_results(cfg_items):
  """Full forward vs cached decoding: a 2-token prompt, then two single-token steps."""
  m = model.build_model(dict(cfg_items))
  sep = batches()[1]

  @functools.partial(jax.jit, compiler_options=CHEAP_OPTIONS)
  def run(key):
    params = m.init(key, sep)
    full = m.apply(params, sep)
    encoded = m.apply(params, sep, method='encode')
    dec = lambda v, a, b: m.apply(
      v,
      sep['decoder_inputs'][:, a:b],
      sep['targets_position'][:, a:b],
      sep['targets_segment'][:, a:b],
      encoded,
      sep['inputs_segment'],
      4,
      method='decode',
      mutable=['cache'],
    )
    first, mut = dec(params, 0, 2)

    def step(cache, t):
      v = {**params, 'cache': cache}
      lg, mut = m.apply(
        v,
        jax.lax.dynamic_slice_in_dim(sep['decoder_inputs'], t, 1, 1),
        jax.lax.dynamic_slice_in_dim(sep['targets_position'], t, 1, 1),
        jax.lax.dynamic_slice_in_dim(sep['targets_segment'], t, 1, 1),
        encoded,
        sep['inputs_segment'],
        4,
        method='decode',
        mutable=['cache'],
      )
      return mut['cache'], lg[:, 0]

    _, rest = jax.lax.scan(step, mut['cache'], jnp.arange(2, 4))
    return full, jnp.concatenate([first, jnp.swapaxes(rest, 0, 1)], axis=1)

  return jax.tree_util.tree_map(np.asarray, run(jax.random.key(0)))


@functools.lru_cache(maxsize=None)
def property_results(cfg_items):
  """Packed / separate / extra-padded forward passes and d logits[t] / d embedding table."""
  cfg = dict(cfg_items)
  m = model.build_model(cfg)
  packed, sep, padded = batches()
  emb = 'target_embed' if cfg['arch'] == 'encoder_decoder' else 'embed'

  @functools.partial(jax.jit, compiler_options=CHEAP_OPTIONS)
  def run(key):
    params = m.init(key, sep)
    out = dict(
      packed=m.apply(params, packed), sep=m.apply(params, sep), padded=m.apply(params, padded)
    )
    boxed = params['params'][emb]['embedding']

    def row0(table):
      p = {'params': {**params['params'], emb: {'embedding': boxed.replace_boxed(table)}}}
      return m.apply(p, sep)[0].sum(-1)  # [T]

    out['jac'] = jax.jacrev(row0)(boxed.unbox())  # [T, V, d]
    return out

  return jax.tree_util.tree_map(np.asarray, run(jax.random.key(0)))


@pytest.mark.parametrize('arch,attention,position', DECODE_CASES)
def test_cached_decoding_equals_full_forward(arch, attention, position):
  full, cached = decode_results(_key(arch, attention, position))
  valid = np.asarray(batches()[1]['targets_segment'])[:, :4] > 0
  np.testing.assert_allclose(cached[valid], full[:, :4][valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('arch,attention,position', PROP_CASES)
def test_causal_gradients_exactly_zero(arch, attention, position):
  r = property_results(_key(arch, attention, position))
  ids = np.asarray(batches()[1]['decoder_inputs'][0])
  dep = np.abs(r['jac'][:, ids]).sum(-1)  # [t, j]: does logit t depend on the token at j?
  assert np.all(dep[np.triu_indices(len(ids), 1)] == 0.0), dep
  assert np.all(np.diag(dep) > 0)


@pytest.mark.parametrize('arch,attention,position', PROP_CASES)
def test_packed_equals_separate_and_padding_invariant(arch, attention, position):
  r = property_results(_key(arch, attention, position))
  np.testing.assert_allclose(r['packed'][0, :4], r['sep'][0, :4], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(r['packed'][0, 4:7], r['sep'][1, :3], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(r['padded'][0, :4], r['sep'][0, :4], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(r['padded'][1, :3], r['sep'][1, :3], atol=1e-5, rtol=1e-5)


def test_learned_positions_refuse_sequences_longer_than_the_table():
  """A learned table of max_len rows cannot embed position max_len: fail at trace time, naming
  the flag, instead of silently reusing the last row (the old clip)."""
  sep = batches()[1]
  width = sep['decoder_inputs'].shape[1]
  m = model.build_model(tiny_config('decoder_only', 'dot', 'learned', max_len=width - 1))
  with pytest.raises(ValueError, match=f'needs model.max_len >= {width}.*--config.model.max_len'):
    jax.eval_shape(m.init, jax.random.key(0), sep)
  m = model.build_model(tiny_config('decoder_only', 'dot', 'learned', max_len=width))
  params = jax.eval_shape(m.init, jax.random.key(0), sep)
  step = lambda n: jax.eval_shape(
    lambda p: m.apply(
      p,
      sep['decoder_inputs'][:, :1],
      sep['targets_position'][:, :1],
      sep['targets_segment'][:, :1],
      None,
      None,
      n,
      method='decode',
      mutable=['cache'],
    ),
    params,
  )
  step(width)  # fits the table
  with pytest.raises(ValueError, match=f'decoding up to {width + 1} tokens'):
    step(width + 1)

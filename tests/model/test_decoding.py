"""Greedy / beam / sampling through the cache, checked against full forward passes."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import decoding

ARCHS = ['encoder_decoder', 'decoder_only', 'rnn']


@functools.lru_cache(maxsize=None)
def tiny(arch, vocab=12, position='rotary'):
  cfg = dict(
    arch=arch,
    vocab_size=vocab,
    d_model=16,
    num_heads=2,
    num_layers=1,
    d_ff=16,
    dropout=0.0,
    position=position,
    rnn_hidden=8,
    rnn_cell='gru',
  )
  m = model.build_model(cfg)
  batch = source_batch(vocab)
  params = jax.jit(m.init)(jax.random.key(3), dict(batch, decoder_inputs=batch['inputs']))
  return m, params


def source_batch(vocab):
  inputs = np.array([[5, 6, 7, 8, 1], [9, 4, 1, 0, 0], [3, 1, 0, 0, 0]])
  return {'inputs': np.minimum(inputs, vocab - 1).astype(np.int32)}


def teacher_forced_logp(m, params, batch, out):
  """log p of each output token under a full forward pass on [bos] + out (+ the prompt)."""
  arch = m.cfg.arch
  dec_in = np.concatenate([np.full((out.shape[0], 1), 2), out[:, :-1]], axis=1)
  if arch == 'decoder_only':  # [bos] + src + out, targets start after the prompt
    rows, starts = [], []
    for src, o in zip(batch['inputs'], dec_in):
      s = src[src > 0]
      rows.append(np.concatenate([[2], s, o[1:]]))
      starts.append(len(s))
    width = max(map(len, rows))
    full = np.stack([np.pad(r, (0, width - len(r))) for r in rows]).astype(np.int32)
    logits = np.asarray(_apply(m)(params, {'decoder_inputs': full}))
    logits = np.stack([lg[st : st + out.shape[1]] for lg, st in zip(logits, starts)])
  else:
    logits = np.asarray(_apply(m)(params, {**batch, 'decoder_inputs': dec_in.astype(np.int32)}))
  return np.array(jax.nn.log_softmax(logits, -1))


@functools.lru_cache(maxsize=None)
def _apply(m):
  return jax.jit(m.apply)


@pytest.mark.parametrize('arch', ARCHS)
def test_greedy_is_argmax_of_full_forward_and_beam1_equals_greedy(arch):
  m, params = tiny(arch)
  batch = source_batch(12)
  out = decoding.generate(m, params, batch, method='greedy', max_len_margin=3)
  logp = teacher_forced_logp(m, params, batch, out)
  logp[..., [0, 2]] = -np.inf  # never generated
  for b in range(out.shape[0]):
    n = list(out[b]).index(1) + 1 if 1 in out[b] else out.shape[1]
    assert np.all(out[b, n:] == 0)
    limit = (batch['inputs'][b] > 0).sum() + 3
    assert n <= limit
    forced = n == limit  # EOS forced at the length limit
    np.testing.assert_array_equal(out[b, : n - forced], logp[b, : n - forced].argmax(-1))
  beam1 = decoding.generate(m, params, batch, method='beam', beam_size=1, max_len_margin=3)
  np.testing.assert_array_equal(beam1, out)
  top1 = decoding.generate(
    m, params, batch, method='sample', top_k=1, rng=jax.random.key(0), max_len_margin=3
  )
  np.testing.assert_array_equal(top1, out)


@pytest.mark.parametrize('arch', ['encoder_decoder', 'decoder_only'])
@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_beam_finds_best_of_all_enumerated_sequences(arch, alpha):
  vocab, max_len = 6, 3  # free tokens 3, 4, 5; EOS forced at length 3: 1 + 3 + 9 candidates
  m, params = tiny(arch, vocab=vocab, position='t5')
  batch = {'inputs': np.array([[3, 4, 1], [5, 1, 0]], np.int32)}
  got = decoding.generate(
    m, params, batch, method='beam', beam_size=9, alpha=alpha, max_len=max_len
  )
  cands = (
    [[1]]
    + [[a, 1] for a in (3, 4, 5)]
    + [[a, b, 1] for a, b in itertools.product((3, 4, 5), repeat=2)]
  )
  seqs = np.array([c + [0] * (max_len - len(c)) for c in cands], np.int32)
  for row in range(2):
    one = {'inputs': np.repeat(batch['inputs'][row : row + 1], len(cands), 0)}
    logp = teacher_forced_logp(m, params, one, seqs)
    scores = [
      sum(logp[i, t, c[t]] for t in range(len(c))) / decoding.length_penalty(len(c), alpha)
      for i, c in enumerate(cands)
    ]
    best = int(np.argmax(scores))
    np.testing.assert_array_equal(got[row], seqs[best], err_msg=f'scores {scores}')


@pytest.mark.parametrize('chunk', [1, 3, 7, 64, 512])
def test_greedy_tokens_are_the_first_largest_allowed_logit(chunk):
  """Against NumPy: the first index of the largest logit, with PAD (0) and BOS (2) never chosen
  and EOS (1) forced at each row's limit; exact ties within and across chunks, -inf logits, a
  padded last chunk (v = 300), and a vocabulary smaller than one chunk (chunk 512)."""
  rng = np.random.default_rng(chunk)
  f = jax.jit(decoding.greedy_tokens, static_argnums=3)
  for case in range(9):
    n, v = 6, 300
    x = (3 * rng.normal(size=(n, v))).astype(np.float32)
    if case % 3 == 1:
      x = np.round(x)  # many exact ties, in one chunk and in several
    if case % 3 == 2:
      x[rng.random((n, v)) < 0.9] = -np.inf
      x[:, 5] = -50.0
    x[0, 0] = x[0, 2] = 1e9  # PAD and BOS, never generated
    t, limits = int(rng.integers(0, 4)), rng.integers(1, 5, n).astype(np.int32)
    allowed = np.ones((n, v), bool)
    allowed[:, [0, 2]] = False
    allowed[t + 1 >= limits] = np.arange(v) == 1  # at the limit only EOS
    want = np.where(allowed, x, -np.inf).argmax(-1)
    got = f(jnp.asarray(x), t, jnp.asarray(limits), chunk)
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f'case {case}')


@pytest.mark.parametrize('chunk', [1, 3, 7, 64])
def test_top_log_probs_equals_top_k_over_all_log_probs(chunk):
  """Values and indices equal lax.top_k over `_log_probs` (ties to the lower index), with ties,
  -inf logits, PAD/BOS masked, EOS forced at the limit, and a last chunk that is padding."""
  rng = np.random.default_rng(chunk)
  f = jax.jit(decoding.top_log_probs, static_argnums=(3, 4))
  for case in range(12):  # two shapes (a compile each); v = 300 leaves a padded last chunk
    n, v, k = 6, 300, (1, 4)[case % 2]
    x = (3 * rng.normal(size=(n, v))).astype(np.float32)
    if case % 3 == 1:
      x = np.round(x)  # many exact ties
    if case % 3 == 2:
      x[rng.random((n, v)) < 0.9] = -np.inf
      x[:, 5] = 0.0
    t, limits = int(rng.integers(0, 4)), jnp.asarray(rng.integers(1, 5, n), jnp.int32)
    want = jax.lax.top_k(decoding._log_probs(jnp.asarray(x), t, limits), k)
    got = f(jnp.asarray(x), t, limits, k, chunk)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
  # Logits 2e-8 apart become equal log-probs: the tie goes to the lower index (10, not 50), so
  # chunks must be ranked by their log-probs, not by their raw logits.
  x = np.full((1, 64), -np.inf, np.float32)
  x[0, 10], x[0, 50] = 0.0, 2e-8
  got = f(jnp.asarray(x), 0, jnp.asarray([9], jnp.int32), 1, chunk)
  want = jax.lax.top_k(decoding._log_probs(jnp.asarray(x), 0, jnp.asarray([9])), 1)
  assert int(got[1][0, 0]) == 10 == int(want[1][0, 0])


def test_beam_search_with_chunked_top_k_equals_whole_vocabulary_top_k(monkeypatch):
  m, params = tiny('encoder_decoder', vocab=40)
  batch = source_batch(40)
  run = lambda: decoding.generate(m, params, batch, method='beam', beam_size=3, max_len_margin=6)
  decoding._compiled.cache_clear()
  monkeypatch.setattr(decoding, 'TOP_K_CHUNK', 10**6)  # one chunk: lax.top_k over all V
  whole = run()
  decoding._compiled.cache_clear()
  monkeypatch.setattr(decoding, 'TOP_K_CHUNK', 4)  # 10 chunks of 4
  chunked = run()
  decoding._compiled.cache_clear()
  np.testing.assert_array_equal(chunked, whole)


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda **kw: np.isfinite(np.asarray(decoding.filter_logits(logits, 1.0, **kw)))[0].tolist()
  assert keep(top_k=2, top_p=1.0) == [True, True, False, False]
  assert keep(top_k=0, top_p=0.7) == [True, True, False, False]  # 0.5 < 0.7 <= 0.8
  assert keep(top_k=0, top_p=0.81) == [True, True, True, False]
  assert keep(top_k=0, top_p=0.4) == [True, False, False, False]


def test_sampling_is_reproducible_and_respects_eos():
  m, params = tiny('decoder_only')
  batch = source_batch(12)
  a = decoding.generate(
    m, params, batch, method='sample', rng=jax.random.key(7), temperature=2.0, max_len_margin=3
  )
  b = decoding.generate(
    m, params, batch, method='sample', rng=jax.random.key(7), temperature=2.0, max_len_margin=3
  )
  np.testing.assert_array_equal(a, b)
  for row in a:
    n = list(row).index(1)
    assert np.all(row[n + 1 :] == 0) and np.all(row[:n] > 2)


def test_bad_method_is_rejected():
  m, params = tiny('encoder_decoder')
  with pytest.raises(ValueError, match='greedy'):
    decoding.generate(m, params, source_batch(12), method='nucleus')


def test_decoder_only_prompt_padding_does_not_change_output_or_need_a_longer_table():
  """Eval batches pad prompts to source + target length; generate drops the all-padding columns,
  so the output is the same as from the tight batch and the learned table need only cover the
  prompts actually given (a 40-slot table; the wide batch alone would need 64 + 1 + 64 + 3)."""
  cfg = dict(
    arch='decoder_only',
    vocab_size=12,
    d_model=16,
    num_heads=2,
    num_layers=1,
    d_ff=16,
    dropout=0.0,
    position='learned',
    max_len=40,
  )
  m = model.build_model(cfg)
  tight = source_batch(12)
  params = jax.jit(m.init)(jax.random.key(3), {'decoder_inputs': tight['inputs']})
  wide = {'inputs': np.pad(tight['inputs'], ((0, 0), (0, 59)))}
  a = decoding.generate(m, params, tight, method='greedy', max_len_margin=3)
  b = decoding.generate(m, params, wide, method='greedy', max_len_margin=3)
  assert a.shape == (3, 5 + 3) and b.shape == (3, 64 + 3)
  np.testing.assert_array_equal(b[:, : a.shape[1]], a)
  assert not b[:, a.shape[1] :].any()


@pytest.mark.parametrize(
  'method,chunk',
  [
    ('greedy', 4),  # prefix widths 4, 8, 10: three branches
    pytest.param('beam', 64, marks=pytest.mark.slow),  # one width; buffers reordered with beams
  ],
)
def test_uncached_decoding_matches_cached(monkeypatch, method, chunk):
  """decoding.Uncached (the prefix recomputed every step) gives the cached decoder's tokens.
  Rotary in the decoder: the classic place where a cache gets positions wrong."""
  from flax import linen as nn
  from ml_collections import ConfigDict

  cfg = ConfigDict(
    {
      'arch': 'encoder_decoder',
      'vocab_size': 40,
      'd_model': 16,
      'num_heads': 2,
      'num_layers': 1,
      'd_ff': 32,
      'position': 'rotary',
      'dropout': 0.0,
    }
  )
  module = model.build_model(cfg)
  rng = np.random.default_rng(0)
  inputs = rng.integers(4, 40, (3, 5)).astype(np.int32)
  inputs[0, 3:] = 0
  params = nn.unbox(
    module.init(jax.random.key(0), {'inputs': inputs, 'decoder_inputs': inputs})['params']
  )
  monkeypatch.setattr(decoding, 'UNCACHED_CHUNK', chunk)
  cached = decoding.generate(
    module, params, {'inputs': inputs}, method=method, beam_size=3, max_len=10
  )
  uncached = decoding.generate(
    decoding.Uncached(module), params, {'inputs': inputs}, method=method, beam_size=3, max_len=10
  )
  np.testing.assert_array_equal(cached, uncached)


@pytest.mark.parametrize('method', ['greedy', 'beam'])
def test_rows_split_over_devices_equal_one_device(method):
  """Greedy and beam search decode 2 x 8 + 1 rows on 3 devices (rows padded to 3 x 6) exactly as
  on one device; sampling never splits (its noise would depend on the split)."""
  m, params = tiny('encoder_decoder')
  rng = np.random.default_rng(0)
  inputs = rng.integers(3, 12, size=(17, 5)).astype(np.int32)
  inputs[:, -1] = 1
  inputs[::3, 3:] = 0  # some shorter rows
  batch = {'inputs': inputs}
  assert [d.id for d in decoding.row_devices(17, method)] == [d.id for d in jax.devices()[:2]]
  assert decoding.row_devices(7, method) is None and decoding.row_devices(64, 'sample') is None
  kw = dict(method=method, beam_size=3, max_len_margin=3)
  one = decoding.generate(m, params, batch, split_rows=False, **kw)
  old = decoding.MIN_ROWS_PER_DEVICE
  decoding.MIN_ROWS_PER_DEVICE = 5
  try:
    assert len(decoding.row_devices(17, method)) == 3
    split = decoding.generate(m, params, batch, **kw)
  finally:
    decoding.MIN_ROWS_PER_DEVICE = old
  np.testing.assert_array_equal(split, one)


@pytest.mark.parametrize('arch', ['encoder_decoder', 'decoder_only'])
def test_scanned_layers_decode_as_an_unrolled_loop_with_the_same_function(arch):
  """generate runs a scanned model as its Python-loop twin: layer i gets slice i of every
  stacked leaf (3 layers, so an order mix-up would show), the forward pass is the same function,
  and a greedy decode is the argmax of the scanned model's own full forward pass."""
  cfg = dict(
    arch=arch, vocab_size=12, d_model=16, num_heads=2, num_layers=3, d_ff=16, dropout=0.0,
    position='rotary', scan_layers=True,
  )  # fmt: skip
  m = model.build_model(cfg)
  batch = source_batch(12)
  full = dict(batch, decoder_inputs=np.array([[2, 5, 6, 7], [2, 8, 9, 1], [2, 3, 0, 0]], np.int32))
  params = jax.jit(m.init)(jax.random.key(5), full)
  loop, loop_vars = decoding.unrolled(m, params)
  assert not loop.cfg.scan_layers and m.cfg.scan_layers
  assert decoding.unrolled(m, params)[0] is loop  # one clone per model: compiled searches reuse
  # The unrolled params are kept for the next call with the same arrays (no slicing per call);
  # other arrays get their own.
  assert decoding.unrolled(m, params)[1]['params'] is loop_vars['params']
  doubled = jax.tree.map(lambda x: 2 * x, params)
  twice = decoding.unrolled(m, doubled)[1]['params']
  np.testing.assert_array_equal(
    jax.tree.leaves(twice)[0], 2 * np.asarray(jax.tree.leaves(loop_vars['params'])[0])
  )
  bare = decoding.unrolled(m, params['params'])[1]  # params alone come back alone
  assert jax.tree.structure(bare) == jax.tree.structure(loop_vars['params'])
  stack = 'decoder' if arch == 'decoder_only' else 'encoder'
  assert 'layers' not in loop_vars['params'][stack]
  assert sorted(loop_vars['params'][stack]) == sorted(
    [k for k in params['params'][stack] if k != 'layers'] + ['layer_0', 'layer_1', 'layer_2']
  )
  stacked = jax.tree.leaves(params['params'][stack]['layers'])
  for i in range(3):
    for a, b in zip(jax.tree.leaves(loop_vars['params'][stack][f'layer_{i}']), stacked):
      np.testing.assert_array_equal(a, b[i])
  forward = lambda mod, v: jax.jit(mod.apply)(v, full)  # jitted: no eager op-by-op compiles
  np.testing.assert_allclose(forward(loop, loop_vars), forward(m, params), atol=1e-5)
  out = decoding.generate(m, params, batch, method='greedy', max_len_margin=8)
  logp = teacher_forced_logp(m, params, batch, out)
  logp[..., [0, 2]] = -np.inf  # never generated
  compared = 0
  for b in range(out.shape[0]):
    n = list(out[b]).index(1) + 1 if 1 in out[b] else out.shape[1]
    n -= n == (batch['inputs'][b] > 0).sum() + 8  # EOS forced at the length limit
    np.testing.assert_array_equal(out[b, :n], logp[b, :n].argmax(-1))
    compared += n
  assert compared >= 5  # enough free choices to compare


def test_split_decoding_of_a_scanned_model_with_replicated_params_is_repeatable():
  """Rows split over 2 devices, params replicated on a 2-device mesh (as training leaves them),
  a scanned model (so generate slices fresh per-layer params every call): 40 calls in a row give
  the same tokens. When each device's slice was dispatched from a thread of its own, transferring
  those fresh arrays from the threads at once failed ~1 call in 7 (jax `safe_zip` ValueError);
  the split is now one shard_map'd call, and this keeps it repeatable."""
  cfg = dict(vocab_size=64, d_model=32, num_heads=2, num_layers=3, d_ff=32, dropout=0.0)
  m = model.build_model(cfg)  # scan_layers: the default
  assert m.cfg.scan_layers
  inputs = np.random.default_rng(1).integers(4, 64, size=(16, 10)).astype(np.int32)
  inputs[:, -1] = 1
  params = jax.jit(m.init)(jax.random.key(0), {'inputs': inputs, 'decoder_inputs': inputs})
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ('data',))
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  assert len(decoding.row_devices(16, 'beam')) == 2
  outs = [
    decoding.generate(m, params, {'inputs': inputs}, method='beam', beam_size=2, max_len=6)
    for _ in range(40)
  ]
  for out in outs[1:]:
    np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize('attention', ['dot', 'additive', 'shared_qk', 'linear', 'lightconv'])
def test_beams_sharing_one_source_row_decode_as_repeated_sources(attention):
  """EncoderDecoder.decode with the source once per sentence (r beam rows each, folded into one
  row of r*T cross-attention queries) gives the logits of the source repeated for every beam
  row, on the prompt call that creates the cache and on the cached steps after it; and the
  cross-attention cache holds one row per sentence."""
  from flax import linen as nn

  cfg = dict(
    arch='encoder_decoder',
    vocab_size=20,
    d_model=16,
    num_heads=2,
    num_layers=2,
    d_ff=16,
    dropout=0.0,
    position='sinusoidal',
    attention=attention,
    scan_layers=attention != 'lightconv',  # its default widths differ per layer
  )
  m = model.build_model(cfg)
  rng = np.random.default_rng(1)
  inputs = rng.integers(3, 20, (2, 6)).astype(np.int32)
  inputs[1, 4:] = 0  # a padded source: its keys must stay masked for all its beams
  params = nn.unbox(m.init(jax.random.key(0), {'inputs': inputs, 'decoder_inputs': inputs}))
  encoded = m.apply(params, {'inputs': inputs}, method='encode')
  src_seg = (inputs != 0).astype(np.int32)
  r, steps = 3, 4
  toks = rng.integers(3, 20, (2 * r, steps)).astype(np.int32)

  decode = jax.jit(
    lambda v, *a: m.apply(v, *a, steps, method='decode', mutable=['cache'])  # one compile per
  )  # cache structure: the prompt call and the cached steps

  def run(enc, seg):
    cache, out = None, []
    for t in range(steps):
      v = params if cache is None else {**params, 'cache': cache}
      ones = np.ones((2 * r, 1), np.int32)
      logits, mut = decode(v, toks[:, t : t + 1], ones * t, ones, enc, seg)
      cache = mut['cache']
      out.append(np.asarray(logits[:, -1]))
    return np.stack(out, 1), cache

  shared, cache = run(encoded, src_seg)
  repeated, _ = run(np.repeat(encoded, r, 0), np.repeat(src_seg, r, 0))
  np.testing.assert_allclose(shared, repeated, rtol=1e-5, atol=1e-5)
  cross = [
    x
    for p, x in jax.tree_util.tree_leaves_with_path(cache)
    if str(getattr(p[-1], 'key', '')).startswith(decoding.CROSS_PREFIX)
  ]
  assert cross and all(x.shape[0] == 2 for x in cross)
  # and the rows of one sentence differ (distinct prefixes), so the check is not vacuous
  assert not np.allclose(shared[0], shared[1])


def test_cache_phases_double_until_the_total():
  assert decoding.cache_phases(32, 32) == [32]
  assert decoding.cache_phases(80, 32) == [32, 64, 80]
  assert decoding.cache_phases(64, 16) == [16, 32, 64]
  assert decoding.cache_phases(5, 1) == [1, 2, 4, 5]


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('method', ['greedy', 'beam', 'sample'])
@pytest.mark.parametrize('cached', [True, False])
def test_a_growing_cache_decodes_as_one_with_room_for_every_token(
  monkeypatch, arch, method, cached
):
  """Phases of 1, 2, 4, 8, 11 tokens (the cache padded with empty slots between loops) give
  the tokens of a cache with room for every token from the start: greedy, beam search (which
  reorders the grown cache) and sampling, for every architecture and the uncached adapter."""
  from launch import measure

  if arch == 'rnn' and not cached:
    pytest.skip('the RNN has no uncached decoder')
  m, params = tiny(arch, vocab=40)
  m = measure.FixedLength(m, cached=cached)  # EOS never wins: every row runs all 11 steps
  batch = source_batch(40)

  def run(first):
    decoding._compiled.cache_clear()
    monkeypatch.setattr(decoding, 'CACHE_PHASE', first)
    monkeypatch.setattr(decoding, 'CACHE_PHASE_MIN_ROWS', 1)
    kw = dict(rng=jax.random.key(3)) if method == 'sample' else {}
    return decoding.generate(m, params, batch, method=method, beam_size=3, max_len=11, **kw)

  whole, grown = run(10**6), run(1)
  decoding._compiled.cache_clear()
  assert (whole[:, 8:] != 0).all()  # through phases of 1, 2, 4, 8 and 11 tokens
  np.testing.assert_array_equal(grown, whole)


def test_params_replicated_over_devices_decode_on_one_replica():
  """Params replicated over 2 devices (a train state on the mesh) decode one sentence on one
  replica, without a transfer (the arrays are that replica's own buffers), and split rows take
  them as they are; a tree on one device, or sharded params, is passed on as it is.
  The tokens equal those of params on one device."""
  m, params = tiny('encoder_decoder')
  devs = jax.devices()[:2]
  mesh = jax.sharding.Mesh(np.array(devs), ('data',))
  rep = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  one = decoding._one_replica(rep)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(rep)):
    assert a.sharding.device_set == {devs[0]}
    assert a.unsafe_buffer_pointer() == b.addressable_shards[0].data.unsafe_buffer_pointer()
  on1 = decoding._on_device(rep, devs[1])
  for a, b in zip(jax.tree.leaves(on1), jax.tree.leaves(rep)):
    assert a.unsafe_buffer_pointer() == b.addressable_shards[1].data.unsafe_buffer_pointer()
  single = jax.device_put(params, devs[1])
  assert decoding._one_replica(single) is single
  even = next(x for x in jax.tree.leaves(params) if x.ndim and x.shape[0] % 2 == 0)
  split = jax.device_put(even, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  mixed = [split, jax.tree.leaves(rep)[1]]
  assert decoding._one_replica(mixed) is mixed
  batch = source_batch(12)
  kw = dict(method='beam', beam_size=3, max_len_margin=3, split_rows=False)
  np.testing.assert_array_equal(
    decoding.generate(m, rep, batch, **kw), decoding.generate(m, params, batch, **kw)
  )
  # generate keeps the replica for the next call with the same arrays; new arrays (other
  # values) get their own, and decode with their own values.
  assert decoding._one_replica_of(rep) is decoding._one_replica_of(rep)
  # Split rows: the params replicated over the rows' mesh, which for a train state's params is
  # no copy (each device's shard is that device's own buffer), kept for the next call too.
  _, rows_rep = decoding._compiled_split(m, 'beam', 3, 8, 0, tuple(devs))
  on_rows = decoding._kept(jax.device_put, rep, rows_rep)
  assert on_rows is decoding._kept(jax.device_put, rep, rows_rep)
  for a, b in zip(jax.tree.leaves(on_rows), jax.tree.leaves(rep)):
    assert [s.data.unsafe_buffer_pointer() for s in a.addressable_shards] == [
      s.data.unsafe_buffer_pointer() for s in b.addressable_shards
    ]
  doubled = jax.tree.map(lambda x: 2 * x, rep)
  again = decoding._one_replica_of(doubled)
  assert again is not decoding._one_replica_of(rep)
  np.testing.assert_array_equal(jax.tree.leaves(again)[0], 2 * jax.tree.leaves(one)[0])
  np.testing.assert_array_equal(
    decoding.generate(m, doubled, batch, **kw),
    decoding.generate(m, jax.tree.map(lambda x: 2 * x, params), batch, **kw),
  )


def test_tied_output_reads_a_shared_table_copy_that_beam_reordering_keeps():
  """Decoding caches the tied output table as [D, V] (`shared_output_table`, made from the params
  at the first decode call) and the step's logits equal a full forward pass's; beam search's
  reorder gathers batch-row leaves by parent and leaves `shared_*` and `cross_*` leaves alone."""
  m, params = tiny('encoder_decoder')
  batch = {k: jnp.asarray(v) for k, v in source_batch(12).items()}
  enc = m.apply(params, batch, method='encode')
  src_seg = (batch['inputs'] > 0).astype(jnp.int32)
  tok = jnp.array([[2, 5], [2, 7], [2, 3]], jnp.int32)
  pos, seg = jnp.broadcast_to(jnp.arange(2), tok.shape), jnp.ones_like(tok)
  decode = jax.jit(
    lambda p, t, q, s: m.apply(p, t, q, s, enc, src_seg, 4, method='decode', mutable=['cache'])
  )
  logits, mut = decode(params, tok, pos, seg)
  full = jax.jit(m.apply)(params, dict(batch, decoder_inputs=tok))
  np.testing.assert_allclose(logits, full, atol=1e-5)
  cache = mut['cache']
  table = params['params']['embed']['embedding'].value  # boxed: logical axes
  np.testing.assert_array_equal(cache['decoder']['shared_output_table'], table.T)
  idx = jnp.array([2, 0, 0])
  moved = decoding._reorder(cache, idx)
  flat = jax.tree_util.tree_flatten_with_path(cache)[0]
  for (path, x), y in zip(flat, jax.tree.leaves(moved)):
    name = str(path[-1].key)
    if name.startswith(('shared_', 'cross_')) or not x.ndim:
      np.testing.assert_array_equal(y, x)
    else:
      np.testing.assert_array_equal(y, x[idx])
  assert any(str(p[-1].key).startswith('cross_') for p, _ in flat)  # both kinds were exercised


def test_shared_cache_leaves_are_made_once_per_params_and_seed_the_search(monkeypatch):
  """generate makes the cache's `shared_*` leaves (the tied table's [D, V] copy) once per params,
  keeps them for the next calls with the same arrays, and seeds each search's cache with them:
  the tokens equal those of a search that makes its own. A model without such leaves (the RNN)
  gets its variables back as they are."""
  m, params = tiny('encoder_decoder')
  seeded = decoding._kept(decoding._with_shared_cache, params, m)
  assert seeded is decoding._kept(decoding._with_shared_cache, params, m)
  assert set(seeded) == {'params', 'cache'}
  table = params['params']['embed']['embedding'].value  # boxed: logical axes
  np.testing.assert_array_equal(seeded['cache']['decoder']['shared_output_table'], table.T)
  assert jax.tree.leaves(seeded['cache']) == [seeded['cache']['decoder']['shared_output_table']]
  rnn, rnn_params = tiny('rnn')
  assert decoding._with_shared_cache(rnn_params, rnn) is rnn_params
  batch = source_batch(12)
  for kw in (dict(method='beam', beam_size=3), dict(method='greedy')):
    out = decoding.generate(m, params, batch, max_len_margin=3, **kw)
    with monkeypatch.context() as patch:
      patch.setattr(decoding, '_with_shared_cache', lambda variables, module: variables)
      np.testing.assert_array_equal(
        decoding.generate(m, params, batch, max_len_margin=3, **kw), out
      )

"""Greedy, beam search and sampling over any model's cached `decode` step.

The whole search is one jitted function (`lax.while_loop`, no host round trips). Every model
(encoder-decoder, decoder-only, RNN) is driven through the same three calls: `encode` once,
`decode` on the prompt (creating the cache: cross-attention K/V are projected here, once per
source, and an encoder-decoder's beams share their sentence's copy), then `decode` on one token
per step. Decoder-only prompts (`[bos] + inputs`) are right-aligned so all rows continue at the
same cache slot; left padding is invisible to the model because it has segment 0, and positions
are explicit, so every position scheme stays correct.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from model import transformer
from model.vocab import BOS, EOS, PAD

CROSS_PREFIX = 'cross_'  # cache leaves that depend on the source only (model/attention.py)

METHODS = ('greedy', 'beam', 'sample')


def length_penalty(length, alpha):
  """GNMT (Wu et al. 2016): ((5 + |Y|) / 6) ** alpha."""
  return ((5.0 + length) / 6.0) ** alpha


def generate(
  module,
  params,
  batch,
  *,
  method='greedy',
  beam_size=4,
  alpha=0.6,
  max_len_margin=50,
  max_len=None,
  temperature=1.0,
  top_k=0,
  top_p=1.0,
  rng=None,
  split_rows=True,
):
  """Decode `batch['inputs']` -> int32 [B, L]: tokens without BOS, EOS included, 0 after EOS.

  split_rows: greedy and beam search split the rows over the local devices (`row_devices`).

  Row b may produce at most (its source length + max_len_margin) tokens (EOS is forced at that
  length); L = inputs width + margin, or `max_len` for every row when given.
  """
  if method not in METHODS:
    raise ValueError(f'decoding method={method!r} is not valid; choose one of {list(METHODS)}.')
  if method == 'beam' and beam_size < 1:
    raise ValueError(f'beam_size={beam_size} must be >= 1.')
  if method == 'sample' and rng is None:
    raise ValueError('method=sample needs rng=jax.random.key(...).')
  variables = params if isinstance(params, dict) and 'params' in params else {'params': params}
  module, variables = unrolled(module, variables)
  variables = _kept(_with_shared_cache, variables, module)
  keys = ('inputs', 'inputs_segment', 'inputs_position')
  arrays = {k: np.asarray(batch[k]) for k in keys if batch.get(k) is not None}
  inputs = arrays['inputs']
  seg = arrays.get('inputs_segment')
  src_len = (seg > 0).sum(1) if seg is not None else (inputs != PAD).sum(1)
  width = inputs.shape[1]
  if module.cfg.arch == 'decoder_only':
    # The cache holds [bos] + prompt + output: columns that are padding in every row (eval
    # batches pad prompts to source + target length) would only lengthen it (and, with learned
    # positions, could exceed the table). Keep a multiple of 16 so few widths compile.
    keep = min(width, max(16, -(-int(src_len.max()) // 16) * 16))
    arrays = {k: v[:, :keep] for k, v in arrays.items()}
    inputs = arrays['inputs']
  if max_len is None:
    total = inputs.shape[1] + max_len_margin
    limits = np.minimum(src_len + max_len_margin, total)
    out_len = width + max_len_margin
  else:
    total = out_len = int(max_len)
    limits = np.full(inputs.shape[0], total)
  method_key = (module, method, int(beam_size) if method == 'beam' else 1, int(total), int(top_k))
  # Host arrays and NumPy scalars go to the call as they are (jit transfers them with the call):
  # building each as a jax array first cost ~0.1 ms apiece, host time that a one-sentence call
  # waits for (docs/performance.md).
  rng = _default_rng() if rng is None else rng
  scalars = (rng, np.float32(alpha), np.float32(temperature), np.float32(top_p))
  devices = row_devices(inputs.shape[0], method) if split_rows else None
  if devices is None:
    fn = _compiled(*method_key)
    out = np.asarray(fn(_one_replica_of(variables), arrays, np.asarray(limits, np.int32), *scalars))
  else:
    out = _split_call(method_key, variables, arrays, limits, scalars, devices)
  return np.pad(out, ((0, 0), (0, out_len - out.shape[1])))  # PAD after EOS, width as promised


def unrolled(module, variables):
  """(module, variables) -- variables {'params': ...} or the params alone, returned in the same
  form -- with nn.scan's stacked layers as a Python loop: decoding's form.

  A scanned stack runs its layers as a while loop inside every decode step, and each iteration
  slices that layer's params and cache out of the stacked arrays and writes the cache back
  (beam-4 at size=small: 21% of op time in those slices, plus the loop and layout copies).
  Unrolled, each layer owns its params and cache buffers. Same layers, same math: leaf [n, ...]
  of a `layers` subtree becomes `layer_i`'s [...], the names of `run_layers`' Python loop.
  Anything else (the RNN, an adapter such as `Uncached`, an unrolled model) is returned as is."""
  cfg = getattr(module, 'cfg', None)
  scanned = isinstance(module, nn.Module) and getattr(cfg, 'scan_layers', False)
  if not scanned or cfg.arch == 'rnn':
    return module, variables
  wrapped = isinstance(variables, collections.abc.Mapping) and 'params' in variables
  params = _kept(_unstacked, variables['params'] if wrapped else variables)
  return _unrolled_module(module), ({**variables, 'params': params} if wrapped else params)


def _unstacked(params):
  """The unrolled params, kept for the next calls with the same arrays (`_kept`): slicing every
  layer out of the stacks took 132 ms of a 327 ms one-sentence beam-4 call at size=base
  (docs/performance.md)."""
  return transformer.unstack_layers(nn.meta.unbox(params))


@functools.lru_cache(maxsize=32)
def _unrolled_module(module):
  return module.clone(cfg=dataclasses.replace(module.cfg, scan_layers=False))


MIN_ROWS_PER_DEVICE = 8  # below this, the split costs more than the rows it parallelises


def row_devices(rows: int, method: str):
  """The local devices greedy / beam search splits `rows` over, or None for one device.

  Rows are independent in greedy and beam search, so each device decodes a slice of them (one
  single-threaded XLA:CPU device per core under `--cpu_devices=auto`, as flax examples/wmt pmaps
  its beam search). Sampling stays on one device: its noise would depend on the split.
  Multi-process runs keep one device per call (their rows are already split by host)."""
  devices = jax.local_devices()
  if method == 'sample' or jax.process_count() > 1:
    return None
  n = min(len(devices), rows // MIN_ROWS_PER_DEVICE)
  return devices[:n] if n > 1 else None


def _split_call(method_key, variables, arrays, limits, scalars, devices):
  """The search over rows split evenly across `devices`: one jitted call of a shard_map over a
  1-D mesh of them, each device running its own while loops on its slice (rows are
  independent and the loops hold no collective). Rows are padded (repeating the last) to a
  multiple of the devices; the params go in replicated over the mesh (no copy when a train
  state already holds them so).

  One dispatch for all devices, where a thread per device each dispatched its slice before:
  1.015-1.031x per beam-4 call over 32 sentences at size=small (docs/performance.md)."""
  fn, replicated = _compiled_split(*method_key, tuple(devices))
  rows, n = len(limits), len(devices)
  per = -(-rows // n)
  pad = lambda a: np.concatenate([a, np.repeat(a[-1:], per * n - rows, axis=0)])
  arrays, limits = {k: pad(v) for k, v in arrays.items()}, pad(np.asarray(limits, np.int32))
  out = fn(_kept(jax.device_put, variables, replicated), arrays, limits, *scalars)
  return np.asarray(out)[:rows]


@functools.lru_cache(maxsize=32)
def _compiled_split(module, method, beam, total, top_k, devices):
  """(jitted search over rows sharded across `devices`, the params' replicated sharding)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ('rows',))
  rows, rep = jax.sharding.PartitionSpec('rows'), jax.sharding.PartitionSpec()
  search = jax.shard_map(
    functools.partial(_search, module, method, beam, total, top_k),
    mesh=mesh,
    in_specs=(rep, rows, rows, rep, rep, rep, rep),  # params, arrays, limits, rng, 3 scalars
    out_specs=rows,
    check_vma=False,  # no collectives: each device's loops are its own
  )
  return jax.jit(search), jax.sharding.NamedSharding(mesh, rep)


def _replica(x, dev):
  """x's own copy on `dev` when x is replicated there (no transfer), else None."""
  if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.sharding.is_fully_replicated:
    for shard in x.addressable_shards:
      if shard.device == dev:
        return shard.data
  return None


def _on_device(tree, dev):
  """`tree` on `dev`: replicated leaves by their replica there (a train state's params are
  replicated over the mesh: 0.1 against 2.5 ms per call for size=small's 91 leaves), others
  copied."""
  return jax.tree.map(
    lambda x: r if (r := _replica(x, dev)) is not None else jax.device_put(x, dev), tree
  )


@functools.lru_cache(maxsize=1)
def _default_rng():
  return jax.random.key(0)


_KEPT = collections.OrderedDict()  # (fn, args, treedef, ids of its leaves) -> (leaves, result)
# Per params being decoded: a scanned model's unrolled params, them with their shared cache
# leaves, one replica of that, its copy on the rows' mesh; room for two such sets. The entries
# hold their arrays (for size=base, ~0.2 GB per set of unrolled params) until pushed out.
_KEPT_ENTRIES = 8


def _kept(fn, tree, *args):
  """`fn(tree, *args)` for a tree of the params (`_unstacked`, `_with_shared_cache`,
  `_one_replica`, `jax.device_put` onto the rows' mesh), kept for the next calls with the same
  arrays: walking size=small's 91 leaves and their shards took ~1.2 ms per call, host time that
  a one-sentence beam search (~33 ms) waits for.
  The entry holds the tree's leaves, so their ids are not reused while it is kept; new arrays
  (the next train step's params) are a new entry."""
  leaves, treedef = jax.tree.flatten(tree)
  key = (fn, args, treedef, tuple(map(id, leaves)))
  if key not in _KEPT:
    _KEPT[key] = (leaves, fn(tree, *args))
    while len(_KEPT) > _KEPT_ENTRIES:
      _KEPT.popitem(last=False)
  _KEPT.move_to_end(key)
  return _KEPT[key][1]


def _with_shared_cache(variables, module):
  """`variables` with the decode cache's `shared_*` leaves (`transformer.SHARED_PREFIX`:
  functions of the params alone, such as the tied output table's [D, V] copy) under 'cache', so
  a search seeds its cache with them instead of making them again. Kept with the params
  (`_kept`): made once per params, not once per call. Beam-4, one sentence, size=small: the
  table's transpose was ~3 ms of op time in each ~50 ms call (docs/performance.md). Models
  without such leaves get `variables` back as they are."""
  shared = _compiled_shared(module)(variables)
  return {**variables, 'cache': shared} if shared else variables


@functools.lru_cache(maxsize=32)
def _compiled_shared(module):
  """jit: variables -> the `shared_*` leaves of the cache that a first decode step creates,
  in the cache's tree layout ({} when there are none). The step runs on a one-token source and
  prompt; its other outputs are unused and dead code to XLA."""

  def shared(variables):
    batch = {'inputs': jnp.full((1, 1), EOS, jnp.int32)}
    encoded, src_seg, (tokens, pos, seg), _ = _prompt(module, variables, batch)
    _, mut = module.apply(
      variables,
      tokens,
      pos,
      seg,
      encoded,
      src_seg,
      tokens.shape[1] + 1,
      method='decode',
      mutable=['cache'],
    )
    flat = traverse_util.flatten_dict(dict(mut.get('cache', {})))
    keep = {k: v for k, v in flat.items() if str(k[-1]).startswith(transformer.SHARED_PREFIX)}
    return traverse_util.unflatten_dict(keep) if keep else {}

  return jax.jit(shared)


def _one_replica_of(tree):
  return _kept(_one_replica, tree)


def _one_replica(tree):
  """A tree whose arrays are all replicated over the same devices, as one replica of it (on the
  first of them); any other tree as it is.

  jit runs a call on every device its committed arguments span: with params replicated over the
  2 CPU devices (a train state on the mesh), one sentence would be decoded twice, once per core,
  both competing for the memory bandwidth a batch-1 step is bound by (39.9-40.4 against 40.9-42.1
  ms per beam-4 call at size=small, docs/performance.md). Sharded params (fsdp, tensor) stay as
  they are."""
  leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
  if not leaves:
    return tree
  devs = leaves[0].sharding.device_set
  if (
    len(devs) < 2
    or not devs <= set(jax.local_devices())
    or any(x.sharding.device_set != devs or not x.sharding.is_fully_replicated for x in leaves)
  ):
    return tree
  return _on_device(tree, leaves[0].addressable_shards[0].device)


@functools.lru_cache(maxsize=32)
def _compiled(module, method, beam, total, top_k):
  return jax.jit(functools.partial(_search, module, method, beam, total, top_k))


def _prompt(module, variables, batch):
  """Encoder output and the first decoder tokens [B,P] (+ positions, segments, next position)."""
  inputs = batch['inputs']
  b, s = inputs.shape
  if module.cfg.arch != 'decoder_only':
    encoded = module.apply(variables, batch, method='encode')
    src_seg = batch.get('inputs_segment', (inputs != PAD).astype(jnp.int32))
    ones = jnp.ones((b, 1), jnp.int32)
    return encoded, src_seg, (BOS * ones, 0 * ones, ones), ones[:, 0]
  # decoder-only: [bos] + inputs, right-aligned in width s + 1, positions from 0 at the bos.
  n = (inputs != PAD).sum(1)
  k = jnp.arange(s + 1)[None, :] - (s - n)[:, None]  # index into [bos] + inputs; < 0 is padding
  body = jnp.take_along_axis(inputs, jnp.clip(k - 1, 0, s - 1), axis=1)
  tokens = jnp.where(k == 0, BOS, jnp.where(k > 0, body, PAD)).astype(jnp.int32)
  return (
    None,
    None,
    (tokens, jnp.maximum(k, 0).astype(jnp.int32), (k >= 0).astype(jnp.int32)),
    n + 1,
  )


def _repeat(x, k):
  return None if x is None else jnp.repeat(x, k, axis=0)


def _search(
  module, method, beam, total, top_k, variables, batch, limits, rng, alpha, temperature, top_p
):
  encoded, src_seg, (tokens, pos, seg), next_pos = _prompt(module, variables, batch)
  if beam > 1:  # beam rows b*beam .. b*beam+beam-1 belong to sentence b
    tokens, pos, seg, next_pos = (_repeat(x, beam) for x in (tokens, pos, seg, next_pos))
    if not getattr(module, 'beams_share_source', False):  # else: once per sentence (transformer)
      encoded, src_seg = _repeat(encoded, beam), _repeat(src_seg, beam)
  prompt = tokens.shape[1]

  def step(cache, tok, p, sg, cache_len):
    v = dict(variables) if cache is None else {**variables, 'cache': cache}
    logits, mut = module.apply(
      v, tok, p, sg, encoded, src_seg, cache_len, method='decode', mutable=['cache']
    )
    return logits[:, -1].astype(jnp.float32), mut['cache']

  ends, grow = _cache_growth(
    lambda n: step(None, tokens, pos, seg, n)[1], prompt, total, tokens.shape[0]
  )
  logits, cache = step(None, tokens, pos, seg, prompt + ends[0])
  one = jnp.ones((tokens.shape[0], 1), jnp.int32)

  def next_at(cache_len):  # one step over a cache of `cache_len` slots
    return lambda cache, tok, t: step(cache, tok[:, None], (next_pos + t)[:, None], one, cache_len)

  phases = [(end, next_at(prompt + end)) for end in ends]  # (steps it runs before, its next_fn)
  grow_at = lambda cache, i: grow(cache, prompt + ends[i])
  if method == 'beam':
    return _beam(phases, grow_at, logits, cache, limits, beam, total, alpha)
  return _greedy_or_sample(
    phases,
    grow_at,
    logits,
    cache,
    limits,
    total,
    method == 'sample',
    rng,
    temperature,
    top_k,
    top_p,
  )


CACHE_PHASE = 16  # tokens generated with the shortest cache; each later phase doubles it
CACHE_PHASE_MIN_ROWS = (
  16  # fewer rows (beams included): one phase (its loop costs more than it saves)
)


def cache_phases(total: int, first: int | None = None) -> list[int]:
  """The step counts at which a cache of room for `total` tokens grows: [first, 2 first, ...,
  total] (first: `CACHE_PHASE`). Each phase is one while loop at its own cache length."""
  ends, n = [], first or CACHE_PHASE
  while n < total:
    ends.append(n)
    n *= 2
  return ends + [total]


def _cache_growth(make_cache, prompt, total, rows):
  """(phase ends, grow(cache, length)) for a cache built by `make_cache(length)`.

  Self-attention reads, and beam search reorders, the whole cache on every step, empty slots
  included: a search of `total` steps over a cache of room for all of them does most of that
  work on slots no token has reached (beam-4 at size=small, 16 sentences: 8.3 ms per step at
  room for 33 tokens, 10.3 ms at 65). So decoding starts with room for `CACHE_PHASE` tokens and
  doubles it between while loops (32 sentences over two devices, 32 tokens: phases of 16 took
  0.364-0.380 s per call against 0.395-0.409 for one of 32; phases of 8 were no faster). The
  axes that grow are found by comparing the cache's shapes at two lengths (every model's cache,
  adapters included; a cache with no such axis, e.g. an RNN's, keeps one phase). New slots are
  zeros: segment 0, masked like every empty slot. Below `CACHE_PHASE_MIN_ROWS` rows the cache is
  small and each extra loop costs more than it saves (beam 4 for one sentence: 0.044 against
  0.043 s per call), so one phase."""
  ends = cache_phases(total)
  if len(ends) == 1 or rows < CACHE_PHASE_MIN_ROWS:
    return [total], lambda cache, n: cache
  a, treedef = jax.tree.flatten(jax.eval_shape(lambda: make_cache(prompt + 1)))
  b = jax.tree.leaves(jax.eval_shape(lambda: make_cache(prompt + 2)))
  axes = [
    tuple(i for i, (m, n) in enumerate(zip(x.shape, y.shape)) if m != n) for x, y in zip(a, b)
  ]
  if not any(axes):
    return [total], lambda cache, n: cache

  def grow(cache, n):
    leaves = jax.tree.leaves(cache)
    pad = lambda x, ax: [(0, n - x.shape[i] if i in ax else 0) for i in range(x.ndim)]
    return treedef.unflatten([jnp.pad(x, pad(x, ax)) if ax else x for x, ax in zip(leaves, axes)])

  return ends, grow


def _phased_loop(cond, body, init, phases, grow_at, cache_at):
  """`lax.while_loop(cond, body, init)` in phases: phase i runs while step < its end, with the
  cache (element `cache_at` of the state) grown to its length and its own `next_fn`."""
  state = init
  for i, (end, next_fn) in enumerate(phases):
    if i:
      state = (*state[:cache_at], grow_at(state[cache_at], i), *state[cache_at + 1 :])
    state = jax.lax.while_loop(
      lambda c, end=end: cond(c) & (c[0] < end), functools.partial(body, next_fn=next_fn), state
    )
  return state


def _banned(tok, at_limit, v):
  """Token ids `tok` that are never generated: PAD and BOS, every id but EOS where `at_limit`
  (a row at its length limit, broadcast against `tok`), and ids >= v (a last chunk's padding)."""
  return (tok == PAD) | (tok == BOS) | (at_limit & (tok != EOS)) | (tok >= v)


def _log_probs(logits, t, limits):
  """log-softmax; PAD and BOS are never generated; EOS is forced at each row's length limit."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  v = logp.shape[-1]
  return jnp.where(_banned(jnp.arange(v), (t + 1 >= limits)[:, None], v), -jnp.inf, logp)


def filter_logits(logits, temperature, top_k, top_p):
  """Temperature, then keep the top_k largest (0 = all), then the smallest nucleus of mass top_p."""
  logits = logits / jnp.maximum(temperature, 1e-6)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  probs = jax.nn.softmax(logits, axis=-1)
  sorted_p = -jnp.sort(-probs, axis=-1)
  before = jnp.cumsum(sorted_p, axis=-1) - sorted_p  # mass strictly above each token
  cutoff = jnp.min(jnp.where(before < top_p, sorted_p, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(probs < cutoff, -jnp.inf, logits)


def greedy_tokens(logits, t, limits, chunk: int):
  """The greedy choice of each row: the first index of the largest logit that `_log_probs` does
  not mask (PAD and BOS never, only EOS at the row's limit). log-softmax is monotone in each row,
  so this is the argmax of the log-probs without computing them. One difference: two logits
  close enough for log-softmax's rounding to make their log-probs equal (2e-8 apart near 0) are
  a tie there, which beam search (`top_log_probs`) gives to the lower index; here the larger
  logit wins. Beam search with one beam equals greedy everywhere else.

  Through chunk maxima, as `top_log_probs`: one max-reduction over [N, V] finds each row's first
  chunk holding its largest logit, and the argmax runs over the chunk maxima and then within
  that chunk. XLA:CPU's argmax over the whole [N, V] is a (value, index) reduction several
  times slower than a max; it and the log-softmax were ~11% of a greedy step's op time
  (size=small, 16 rows per device)."""
  n, v = logits.shape
  c = -(-v // chunk)
  banned = _banned(jnp.arange(c * chunk, dtype=jnp.int32), (t + 1 >= limits)[:, None], v)
  padded = jnp.pad(logits, ((0, 0), (0, c * chunk - v)))
  x = jnp.where(banned, -jnp.inf, padded).reshape(n, c, chunk)
  best = jnp.argmax(x.max(axis=-1), axis=-1)  # ties: the first chunk, then the first index in it
  within = jnp.argmax(jnp.take_along_axis(x, best[:, None, None], axis=1)[:, 0], axis=-1)
  return (best * chunk + within).astype(jnp.int32)


def _greedy_or_sample(
  phases, grow_at, logits, cache, limits, total, sample, rng, temperature, top_k, top_p
):
  b = logits.shape[0]

  def body(c, next_fn):
    t, out, logits, cache, done, rng = c
    if sample:
      rng, sub = jax.random.split(rng)
      logp = _log_probs(logits, t, limits)
      tok = jax.random.categorical(sub, filter_logits(logp, temperature, top_k, top_p), axis=-1)
    else:
      tok = greedy_tokens(logits, t, limits, TOP_K_CHUNK)
    tok = jnp.where(done, PAD, tok).astype(jnp.int32)
    out = out.at[:, t].set(tok)
    logits, cache = next_fn(cache, tok, t)
    return t + 1, out, logits, cache, done | (tok == EOS), rng

  def cond(c):
    return (c[0] < total) & ~jnp.all(c[4])

  init = (jnp.int32(0), jnp.zeros((b, total), jnp.int32), logits, cache, jnp.zeros((b,), bool), rng)
  return _phased_loop(cond, body, init, phases, grow_at, cache_at=3)[1]


def _reorder(cache, flat_idx):
  """Gather each beam's parent state. Every cache leaf with a batch has it on axis 0 (see
  model/transformer.py); scalars are shared. Leaves named `cross_*` (cross-attention K/V or
  state, a function of the source alone) are equal across a sentence's beams, and a parent is
  always a beam of the same sentence: they stay as they are. So do leaves named `shared_*`
  (`transformer.SHARED_PREFIX`: functions of the params alone, without a batch axis)."""

  def take(path, x):
    name = str(getattr(path[-1], 'key', ''))
    if not x.ndim or name.startswith((CROSS_PREFIX, transformer.SHARED_PREFIX)):
      return x
    return jnp.take(x, flat_idx, axis=0)

  return jax.tree_util.tree_map_with_path(take, cache)


TOP_K_CHUNK = 64


def top_log_probs(logits, t, limits, k: int, chunk: int):
  """`jax.lax.top_k(_log_probs(logits, t, limits), k)`, the same values and indices (ties to the
  lower index), without a top-k over the whole vocabulary or a [N, V] array of log-probs.

  The k chunks of `chunk` entries with the largest maxima hold the k largest entries (a chunk
  ranked above an entry's chunk has its maximum ranked above that entry, so k such chunks would
  leave the entry out of the top k). log-probs are a monotone function f(x) = (x - max) - lse of
  the logits, so a chunk's largest log-prob is f of its largest (masked) logit: one reduction
  ranks the chunks, and f is evaluated on the k chosen chunks only. XLA:CPU's top-k is a
  sequential custom call: over beam search's [64, 8000] it was 7.5% of a decode step
  (size=small, one device)."""
  n, v = logits.shape
  c = -(-v // chunk)
  if c <= k:
    return jax.lax.top_k(_log_probs(logits, t, limits), k)
  x_max = logits.max(axis=-1, keepdims=True)  # jax.nn.log_softmax's arithmetic, term by term
  lse = jnp.log(jnp.sum(jnp.exp(logits - x_max), axis=-1, keepdims=True))
  at_limit = (t + 1 >= limits)[:, None, None]
  banned = lambda tok: _banned(tok, at_limit, v)  # _log_probs' masks, and the last chunk's padding

  xp = jnp.pad(logits, ((0, 0), (0, c * chunk - v))).reshape(n, c, chunk)
  ids = jnp.arange(c * chunk, dtype=jnp.int32).reshape(1, c, chunk)
  chunk_max = jnp.where(banned(ids), -jnp.inf, xp).max(axis=-1)  # [N, c]
  _, best = jax.lax.top_k((chunk_max - x_max) - lse, k)  # the k chunks, ranked by log-prob
  best = jnp.sort(best, axis=-1)  # ascending chunk ids: candidates in index order, for the ties
  tok = (best[:, :, None] * chunk + jnp.arange(chunk, dtype=jnp.int32)).reshape(n, k * chunk)
  x = jnp.take_along_axis(xp, best[:, :, None], axis=1).reshape(n, k * chunk)
  logp = jnp.where(banned(tok[:, None])[:, 0], -jnp.inf, (x - x_max) - lse)
  vals, pos = jax.lax.top_k(logp, k)
  return vals, jnp.take_along_axis(tok, pos, axis=1)


def _beam(phases, grow_at, logits, cache, limits, k, total, alpha):
  """Keep the k best expansions each step; those ending in EOS move to the finished set, scored
  by log p / length_penalty. Stops when no alive beam can beat a row's best finished score."""
  bk, v = logits.shape
  b, kk = bk // k, min(k, v)
  alive_logp = jnp.tile(jnp.asarray([0.0] + [-jnp.inf] * (k - 1)), (b, 1))
  max_lp = length_penalty(limits.astype(jnp.float32), alpha)

  def body(c, next_fn):
    t, alive_seq, alive_logp, fin_seq, fin_score, logits, cache = c
    # The k best of a sentence's k*V candidates are among each beam's own k best: a top-k over
    # k*k scores instead of adding the alive score to, and selecting over, all k*V of them
    # (A/B, size=small: 0.93x the time per call on one device, 0.97x on two; same tokens).
    row_best, row_tok = top_log_probs(logits, t, jnp.repeat(limits, k), kk, TOP_K_CHUNK)
    cand = (alive_logp[:, :, None] + row_best.reshape(b, k, kk)).reshape(b, k * kk)
    scores, idx = jax.lax.top_k(cand, k)
    parent = idx // kk
    tok = jnp.take_along_axis(row_tok.reshape(b, k * kk), idx, axis=1).astype(jnp.int32)
    seq = jnp.take_along_axis(alive_seq, parent[:, :, None], axis=1).at[:, :, t].set(tok)
    eos = tok == EOS
    new_fin = jnp.where(eos, scores / length_penalty(t + 1.0, alpha), -jnp.inf)
    all_seq = jnp.concatenate([fin_seq, seq], axis=1)
    fin_score, keep = jax.lax.top_k(jnp.concatenate([fin_score, new_fin], axis=1), k)
    fin_seq = jnp.take_along_axis(all_seq, keep[:, :, None], axis=1)
    alive_logp = jnp.where(eos, -jnp.inf, scores)
    cache = _reorder(cache, (jnp.arange(b)[:, None] * k + parent).reshape(-1))
    logits, cache = next_fn(cache, tok.reshape(-1), t)
    return t + 1, seq, alive_logp, fin_seq, fin_score, logits, cache

  def cond(c):
    t, _, alive_logp, _, fin_score = c[:5]
    best_alive = alive_logp.max(axis=1)
    hopeless = (best_alive == -jnp.inf) | (best_alive / max_lp < fin_score.max(axis=1))
    return (t < total) & ~jnp.all(hopeless)

  zeros = jnp.zeros((b, k, total), jnp.int32)
  init = (jnp.int32(0), zeros, alive_logp, zeros, jnp.full((b, k), -jnp.inf), logits, cache)
  _, _, _, fin_seq, fin_score, _, _ = _phased_loop(cond, body, init, phases, grow_at, cache_at=6)
  return fin_seq[:, 0]


# ------------------------------------------------------------------------------ uncached
UNCACHED_CHUNK = 16


def _full_decoder(module, ids, seg, pos, encoded, src_seg):
  return module.decoder(ids, seg, pos, encoded, src_seg, True)


class Uncached:
  """An encoder-decoder driven by `generate` without its KV cache: the reference that cached
  decoding must equal, and the baseline the cache is timed against (launch/benchmark.py).

  It has the model's `cfg` and `apply`. Its 'cache' collection holds only the tokens, positions
  and segments so far (so beam reordering works unchanged), and every `decode` call reruns the
  decoder over the whole prefix. Prefix widths are rounded up to multiples of UNCACHED_CHUNK,
  so a decode compiles a few widths, not one per length.
  """

  def __init__(self, module):
    self.module, self.cfg = module, module.cfg

  def apply(self, variables, *args, method=None, mutable=False):
    if method != 'decode':
      return self.module.apply(variables, *args, method=method)
    del mutable
    return self._recompute(variables, *args)

  def _recompute(self, variables, tokens, positions, segments, encoded, src_seg, max_len):
    b, t = tokens.shape
    cache = variables.get('cache') or {
      'tokens': jnp.zeros((b, max_len), jnp.int32),
      'positions': jnp.zeros((b, max_len), jnp.int32),
      'segments': jnp.zeros((b, max_len), jnp.int32),
      'index': jnp.zeros((), jnp.int32),
    }
    index = cache['index']
    new = {
      k: jax.lax.dynamic_update_slice(cache[k], v, (0, index))
      for k, v in (('tokens', tokens), ('positions', positions), ('segments', segments))
    }
    widths = sorted(set(list(range(UNCACHED_CHUNK, max_len, UNCACHED_CHUNK)) + [max_len]))
    widths = [w for w in widths if w >= t]

    def branch(w):
      def run(_):
        logits = self.module.apply(
          {'params': variables['params']},
          new['tokens'][:, :w],
          new['segments'][:, :w],
          new['positions'][:, :w],
          encoded,
          src_seg,
          method=_full_decoder,
        )
        return jax.lax.dynamic_slice_in_dim(logits, index, t, axis=1)

      return run

    which = jnp.minimum(jnp.searchsorted(jnp.asarray(widths), index + t), len(widths) - 1)
    logits = jax.lax.switch(which, [branch(w) for w in widths], None)
    return logits, {'cache': {**new, 'index': index + t}}

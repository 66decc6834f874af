"""The training loss: label-smoothed cross-entropy over non-padding target tokens.

Two forms with the same value:
- `cross_entropy_sums(logits, ...)`: from materialised logits [B, T, V] (evaluation, tests,
  untied output projections).
- `fused_cross_entropy_sums(hidden, table, ...)`: the tied output projection and the loss in one
  op, over chunks of target positions, with its gradient computed in the same pass (a custom
  VJP), so the [B, T, V] logits and their gradient never exist at once: the memory of the output
  head drops from O(B T V) to O(chunk V), which matters for large vocabularies on accelerators.
  On the 2-core CPU it pays at the Multi30K recipe's shape (128 packed rows of 64, d 128, V 10k,
  2 devices): in one process on an idle machine (2026-12-04) a train step took 1,052 / 1,208 ms with
  chunks of 1024 against 1,720 / 1,741 ms unfused, 0.66-0.72x the CPU time per target token
  (`python -m launch.benchmark --config=configs/multi30k.py:size=wu2021 --steps=5 --decode=
  --sweep='loss_chunk_tokens=0;loss_chunk_tokens=1024;loss_chunk_tokens=0;loss_chunk_tokens=1024'`).
  At d 128 with a 4k vocabulary (`size=default`) it makes no measurable difference (0.97-0.99x).
  At `size=small` (d 256, 8k vocabulary, 32 rows), since the table's gradient is computed as
  [D, V] (g as the [K, N] operand XLA:CPU's GEMMs take, not a transposed [V, B*c] copy of it),
  the step takes 0.95-0.99x the time of the unfused head (2026-12-05, docs/performance.md).
  Off by default (`config.loss_chunk_tokens = 0`); `size=small` and the wu2021 and budget
  recipes turn it on.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax


def _smoothing(label_smoothing: float, vocab: int):
  """(confidence on the label, mass on every other token)."""
  if label_smoothing <= 0:
    return 1.0, 0.0
  return 1.0 - label_smoothing, label_smoothing / (vocab - 1)


def smoothing_entropy(label_smoothing: float, vocab: int) -> float:
  """Entropy (nats) of the smoothed label distribution: the label-smoothed cross-entropy minus
  this is the KL divergence to the smoothed labels (logged as `loss_kl`; 0 for a perfect fit)."""
  conf, low = _smoothing(label_smoothing, vocab)
  if low == 0.0:
    return 0.0
  return -(conf * math.log(conf) + (vocab - 1) * low * math.log(low))


def cross_entropy_sums(logits, targets, weights, label_smoothing=0.0):
  """Token sums of the (label-smoothed) loss, plain NLL, weight and correct predictions.

  Smoothing puts 1 - eps on the label and eps / (V - 1) on every other token; the loss is
  the cross-entropy against that distribution, in nats: the label-smoothed cross-entropy that
  fairseq (`label_smoothed_cross_entropy`, there in bits) and T2T log, so the numbers compare.
  (Before 2026-12-02 the logged loss was that minus the smoothing distribution's entropy, the
  KL divergence, which a perfect model drives to 0; the gradient is the same.) Computed from
  logsumexp and the mean logit: no [B, T, V] one-hot is materialised.
  A prediction is correct when the label's logit is the row's maximum: exact ties count as
  correct, and the [B, T, V] argmax (a variadic reduce, ~2.5% of a CPU train step) is skipped.
  """
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  weights = weights.astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  if label_smoothing > 0:
    conf, low = _smoothing(label_smoothing, vocab)
    lse = jax.nn.logsumexp(logits, axis=-1)
    # CE(q, p) = lse - sum_k q_k z_k = (conf - low) * nll + low * V * (lse - mean_k z_k)
    smooth = (conf - low) * nll + low * vocab * (lse - jnp.mean(logits, axis=-1))
    loss = smooth
  else:
    loss = nll
  label_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  return {
    'loss': jnp.sum(loss * weights),
    'nll': jnp.sum(nll * weights),
    'tokens': jnp.sum(weights),
    'correct': jnp.sum(correct * weights),
  }


def chunk_length(batch: int, length: int, chunk_tokens: int) -> int:
  """The largest divisor c of `length` with batch * c <= chunk_tokens (at least 1)."""
  best = 1
  for c in range(1, length + 1):
    if length % c == 0 and batch * c <= chunk_tokens:
      best = c
  return best


def _chunk_pass(x, table, targets, weights, conf, low):
  """Sums and gradients for one chunk: x [B,c,D], targets/weights [B,c]."""
  logits = jnp.einsum('bcd,vd->bcv', x, table.astype(x.dtype), preferred_element_type=jnp.float32)
  top = jnp.max(logits, axis=-1)
  e = jnp.exp(logits - top[..., None])
  total = jnp.sum(e, axis=-1)
  lse = top + jnp.log(total)
  label = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = lse - label
  # CE against the smoothed labels: lse - (conf - low) z_label - low sum_k z_k.
  smooth = lse - (conf - low) * label - low * jnp.sum(logits, axis=-1) if low else nll
  correct = (label >= top).astype(jnp.float32)
  # d loss / d logits = w (softmax - q), q = low + (conf - low) [k == label]
  is_label = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2) == targets[..., None]
  g = (e / total[..., None] - low - jnp.where(is_label, conf - low, 0.0)) * weights[..., None]
  g = g.astype(x.dtype)
  dx = jnp.einsum('bcv,vd->bcd', g, table.astype(x.dtype), preferred_element_type=jnp.float32)
  # [D, V] then transposed: g [B,c,V] is the dot's right operand in the [K, N] layout XLA:CPU's
  # GEMMs take, instead of a [V, B*c] copy of it as the left one (docs/performance.md).
  dtable = jnp.einsum('bcd,bcv->dv', x, g, preferred_element_type=jnp.float32).T
  sums = (jnp.sum(smooth * weights), jnp.sum(nll * weights), jnp.sum(correct * weights))
  return sums, dx, dtable


def _fused_forward(hidden, table, targets, weights, label_smoothing, chunk_tokens):
  b, t, d = hidden.shape
  vocab = table.shape[0]
  conf, low = _smoothing(label_smoothing, vocab)
  weights = weights.astype(jnp.float32)
  c = chunk_length(b, t, chunk_tokens)
  n = t // c
  split = lambda a: jnp.swapaxes(a.reshape((b, n, c) + a.shape[2:]), 0, 1)  # [n, B, c, ...]

  def body(dtable, xs):
    x, tg, w = xs
    sums, dx, dt = _chunk_pass(x, table, tg, w, conf, low)
    return dtable + dt, (sums, dx)

  dtable, (sums, dx) = jax.lax.scan(
    body, jnp.zeros(table.shape, jnp.float32), (split(hidden), split(targets), split(weights))
  )
  loss, nll, correct = (jnp.sum(s) for s in sums)
  tokens = jnp.sum(weights)
  dhidden = jnp.swapaxes(dx, 0, 1).reshape(b, t, d).astype(hidden.dtype)
  out = {'loss': loss, 'nll': nll, 'tokens': tokens, 'correct': correct}
  return out, (dhidden, dtable.astype(table.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def fused_cross_entropy_sums(
  hidden, table, targets, weights, label_smoothing=0.0, chunk_tokens=2048
):
  """`cross_entropy_sums(hidden . table^T, targets, weights, label_smoothing)`, chunked.

  hidden [B, T, D] (final decoder states), table [V, D] (the tied embedding). Chunks are
  [B, c] blocks of target positions, c the largest divisor of T with B * c <= chunk_tokens, so
  each chunk keeps the batch axis (and its sharding). Only 'loss' is differentiable: the
  gradient is that of the summed smoothed loss; 'nll', 'tokens' and 'correct' are metrics and
  get none (differentiating them through this op gives zero).
  """
  return _fused_forward(hidden, table, targets, weights, label_smoothing, chunk_tokens)[0]


def _fused_bwd(label_smoothing, chunk_tokens, grads, cotangent):
  del label_smoothing, chunk_tokens
  dhidden, dtable = grads
  ct = cotangent['loss']
  return (dhidden * ct.astype(dhidden.dtype), dtable * ct.astype(dtable.dtype), None, None)


fused_cross_entropy_sums.defvjp(_fused_forward, _fused_bwd)  # forward = (sums, gradients)

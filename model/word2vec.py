"""word2vec: CBOW and skip-gram with negative sampling (Mikolov et al. 2013), as sparse SGD in JAX.

The unit of work is one *centre position*: its word `w`, its context words `ctx` (the dynamic
window already applied by the caller; unused slots, e.g. past a line end, hold the out-of-range
id `V`) and `K` noise words `neg`. Both objectives follow word2vec.c:

- skip-gram: every context word's input vector predicts the centre word's output vector
  (word2vec.c trains `syn0[context] . syn1neg[centre]`); the K noise words are drawn once per
  centre and shared by its context words, so the output rows are gathered once per centre
  (word2vec.c draws fresh noise for every pair; sharing cuts the row traffic ~3x).
- CBOW: the mean of the context input vectors predicts the centre word; each context vector
  receives the full error (word2vec.c / gensim `cbow_mean=1`).

Updates are plain SGD applied by scatter-add to the gathered rows only: a dense gradient over a
64k x 100 matrix per step would cost ~100x more memory traffic than the ~16 rows a centre touches.
Data parallelism (the sharded loop is train/word2vec.py): the centres of a step are sharded over
the mesh axis `data`; each device computes the row updates of its shard, the (row id, update)
lists are all-gathered (B x D, never V x D) and every device applies the same scatter to its
replica, so replicas stay identical and the result equals the single-device step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

OBJECTIVES = ('cbow', 'skipgram')
SUBSAMPLING = ('word2vec_c', 'paper', 'none')


# ------------------------------------------------------------------ distributions (NumPy)
def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
  """Unigram^power noise distribution over the vocabulary (zero for unseen ids)."""
  weights = np.asarray(counts, np.float64) ** power
  total = weights.sum()
  if total <= 0:
    raise ValueError('noise_distribution: all counts are zero; the corpus is empty.')
  return weights / total


def keep_probability(counts: np.ndarray, sample: float, variant: str = 'word2vec_c') -> np.ndarray:
  """Probability of keeping each occurrence of a word under frequent-word subsampling.

  `word2vec_c` (also gensim's): keep = (sqrt(f / (s*T)) + 1) * s*T / f, with f the count and T
  the total count; `paper` (Mikolov et al. 2013b): keep = sqrt(s*T / f). Both are clipped to 1.
  """
  counts = np.asarray(counts, np.float64)
  if variant == 'none' or sample <= 0:
    return np.ones_like(counts)
  threshold = sample * counts.sum()
  safe = np.maximum(counts, 1e-12)
  if variant == 'word2vec_c':
    keep = (np.sqrt(safe / threshold) + 1.0) * threshold / safe
  elif variant == 'paper':
    keep = np.sqrt(threshold / safe)
  else:
    raise ValueError(f'subsampling={variant!r}: choose one of {SUBSAMPLING}.')
  return np.minimum(keep, 1.0)


def noise_table(probs: np.ndarray, size: int = 10_000_000) -> np.ndarray:
  """word2vec.c-style lookup table: drawing a uniform slot samples `probs` up to 1/size."""
  bounds = np.round(np.cumsum(probs) * size).astype(np.int64)
  starts = np.concatenate([[0], bounds[:-1]])
  return np.repeat(np.arange(len(probs), dtype=np.int32), bounds - starts)


# ------------------------------------------------------------------ parameters
def init_params(rng: jax.Array, vocab_size: int, dim: int) -> dict:
  """word2vec.c init: inputs uniform in [-0.5/dim, 0.5/dim), outputs zero."""
  w_in = (jax.random.uniform(rng, (vocab_size, dim), jnp.float32) - 0.5) / dim
  return {'input': w_in, 'output': jnp.zeros((vocab_size, dim), jnp.float32)}


# ------------------------------------------------------------------ one step (per device)
def _row_updates(params, batch, lr, objective):
  """Loss sum, pair count and the sparse SGD updates of one shard of centres.

  batch: w [B] centre ids, ctx [B, C] context ids (V = empty slot), neg [B, K] noise ids.
  Returns (loss_sum, pairs, (in_ids [B*C], in_upd [B*C, D]), (out_ids [B*(K+1)], out_upd)).
  """
  w_in, w_out = params['input'], params['output']
  vocab, dim = w_in.shape
  w_B, ctx_BC, neg_BK = batch['w'], batch['ctx'], batch['neg']
  ctx_mask_BC = (ctx_BC < vocab) & (w_B < vocab)[:, None]  # an empty centre has no pairs
  tgt_BT = jnp.concatenate([w_B[:, None], neg_BK], axis=1)  # T = K + 1
  label_T = jnp.zeros(tgt_BT.shape[1], jnp.float32).at[0].set(1.0)
  # word2vec.c skips a noise draw that equals the centre word.
  tgt_mask_BT = (tgt_BT != w_B[:, None]).at[:, 0].set(True) & (w_B < vocab)[:, None]
  h_BCD = w_in.at[ctx_BC].get(mode='fill', fill_value=0.0)
  o_BTD = w_out.at[tgt_BT].get(mode='fill', fill_value=0.0)
  if objective == 'cbow':
    n_B = ctx_mask_BC.sum(1)
    live_B = (n_B > 0).astype(jnp.float32)
    hbar_BD = h_BCD.sum(1) / jnp.maximum(n_B, 1)[:, None]
    logit_BT = jnp.einsum('bd,btd->bt', hbar_BD, o_BTD)
    m_BT = tgt_mask_BT * live_B[:, None]
    g_BT = (label_T - jax.nn.sigmoid(logit_BT)) * m_BT * lr
    loss = -(jax.nn.log_sigmoid(jnp.where(label_T > 0, logit_BT, -logit_BT)) * m_BT).sum()
    pairs = live_B.sum()
    dh_BD = jnp.einsum('bt,btd->bd', g_BT, o_BTD)
    dh_BCD = dh_BD[:, None, :] * ctx_mask_BC[..., None]
    do_BTD = g_BT[..., None] * hbar_BD[:, None, :]
  elif objective == 'skipgram':
    logit_BCT = jnp.einsum('bcd,btd->bct', h_BCD, o_BTD)
    m_BCT = ctx_mask_BC[..., None] * tgt_mask_BT[:, None, :]
    g_BCT = (label_T - jax.nn.sigmoid(logit_BCT)) * m_BCT * lr
    loss = -(jax.nn.log_sigmoid(jnp.where(label_T > 0, logit_BCT, -logit_BCT)) * m_BCT).sum()
    pairs = ctx_mask_BC.sum().astype(jnp.float32)
    dh_BCD = jnp.einsum('bct,btd->bcd', g_BCT, o_BTD)
    do_BTD = jnp.einsum('bct,bcd->btd', g_BCT, h_BCD)
  else:
    raise ValueError(f'objective={objective!r}: choose one of {OBJECTIVES}.')
  in_upd = (ctx_BC.reshape(-1), dh_BCD.reshape(-1, dim))
  out_upd = (tgt_BT.reshape(-1), do_BTD.reshape(-1, dim))
  return loss, pairs, in_upd, out_upd


def _apply(params, in_upd, out_upd):
  """Scatter-add the row updates; ids >= V (empty slots) are dropped."""
  return {
    'input': params['input'].at[in_upd[0]].add(in_upd[1], mode='drop'),
    'output': params['output'].at[out_upd[0]].add(out_upd[1], mode='drop'),
  }


def sgd_step(params, batch, lr, objective, axis_name=None):
  """One synchronous SGD step; with `axis_name`, updates from all devices are all-gathered."""
  loss, pairs, in_upd, out_upd = _row_updates(params, batch, lr, objective)
  if axis_name is not None:
    gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
    in_upd, out_upd = jax.tree.map(gather, (in_upd, out_upd))
    loss, pairs = jax.lax.psum((loss, pairs), axis_name)
  return _apply(params, in_upd, out_upd), loss, pairs

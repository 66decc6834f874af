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
Data parallelism: the centres of a step are sharded over the mesh axis `data`; each device
computes the row updates of its shard, the (row id, update) lists are all-gathered (B x D, never
V x D) and every device applies the same scatter to its replica, so replicas stay identical and
the result equals the single-device step.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

OBJECTIVES = ("cbow", "skipgram")
SUBSAMPLING = ("word2vec_c", "paper", "none")


# ------------------------------------------------------------------ distributions (NumPy)
def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
  """Unigram^power noise distribution over the vocabulary (zero for unseen ids)."""
  weights = np.asarray(counts, np.float64) ** power
  total = weights.sum()
  if total <= 0:
    raise ValueError("noise_distribution: all counts are zero; the corpus is empty.")
  return weights / total


def keep_probability(counts: np.ndarray, sample: float, variant: str = "word2vec_c") -> np.ndarray:
  """Probability of keeping each occurrence of a word under frequent-word subsampling.

  `word2vec_c` (also gensim's): keep = (sqrt(f / (s*T)) + 1) * s*T / f, with f the count and T
  the total count; `paper` (Mikolov et al. 2013b): keep = sqrt(s*T / f). Both are clipped to 1.
  """
  counts = np.asarray(counts, np.float64)
  if variant == "none" or sample <= 0:
    return np.ones_like(counts)
  threshold = sample * counts.sum()
  safe = np.maximum(counts, 1e-12)
  if variant == "word2vec_c":
    keep = (np.sqrt(safe / threshold) + 1.0) * threshold / safe
  elif variant == "paper":
    keep = np.sqrt(threshold / safe)
  else:
    raise ValueError(f"subsampling={variant!r}: choose one of {SUBSAMPLING}.")
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
  return {"input": w_in, "output": jnp.zeros((vocab_size, dim), jnp.float32)}


# ------------------------------------------------------------------ one step (per device)
def _row_updates(params, batch, lr, objective):
  """Loss sum, pair count and the sparse SGD updates of one shard of centres.

  batch: w [B] centre ids, ctx [B, C] context ids (V = empty slot), neg [B, K] noise ids.
  Returns (loss_sum, pairs, (in_ids [B*C], in_upd [B*C, D]), (out_ids [B*(K+1)], out_upd)).
  """
  w_in, w_out = params["input"], params["output"]
  vocab, dim = w_in.shape
  w_B, ctx_BC, neg_BK = batch["w"], batch["ctx"], batch["neg"]
  ctx_mask_BC = (ctx_BC < vocab) & (w_B < vocab)[:, None]  # an empty centre has no pairs
  tgt_BT = jnp.concatenate([w_B[:, None], neg_BK], axis=1)            # T = K + 1
  label_T = jnp.zeros(tgt_BT.shape[1], jnp.float32).at[0].set(1.0)
  # word2vec.c skips a noise draw that equals the centre word.
  tgt_mask_BT = (tgt_BT != w_B[:, None]).at[:, 0].set(True) & (w_B < vocab)[:, None]
  h_BCD = w_in.at[ctx_BC].get(mode="fill", fill_value=0.0)
  o_BTD = w_out.at[tgt_BT].get(mode="fill", fill_value=0.0)
  if objective == "cbow":
    n_B = ctx_mask_BC.sum(1)
    live_B = (n_B > 0).astype(jnp.float32)
    hbar_BD = h_BCD.sum(1) / jnp.maximum(n_B, 1)[:, None]
    logit_BT = jnp.einsum("bd,btd->bt", hbar_BD, o_BTD)
    m_BT = tgt_mask_BT * live_B[:, None]
    g_BT = (label_T - jax.nn.sigmoid(logit_BT)) * m_BT * lr
    loss = -(jax.nn.log_sigmoid(jnp.where(label_T > 0, logit_BT, -logit_BT)) * m_BT).sum()
    pairs = live_B.sum()
    dh_BD = jnp.einsum("bt,btd->bd", g_BT, o_BTD)
    dh_BCD = dh_BD[:, None, :] * ctx_mask_BC[..., None]
    do_BTD = g_BT[..., None] * hbar_BD[:, None, :]
  elif objective == "skipgram":
    logit_BCT = jnp.einsum("bcd,btd->bct", h_BCD, o_BTD)
    m_BCT = ctx_mask_BC[..., None] * tgt_mask_BT[:, None, :]
    g_BCT = (label_T - jax.nn.sigmoid(logit_BCT)) * m_BCT * lr
    loss = -(jax.nn.log_sigmoid(jnp.where(label_T > 0, logit_BCT, -logit_BCT)) * m_BCT).sum()
    pairs = ctx_mask_BC.sum().astype(jnp.float32)
    dh_BCD = jnp.einsum("bct,btd->bcd", g_BCT, o_BTD)
    do_BTD = jnp.einsum("bct,bcd->btd", g_BCT, h_BCD)
  else:
    raise ValueError(f"objective={objective!r}: choose one of {OBJECTIVES}.")
  in_upd = (ctx_BC.reshape(-1), dh_BCD.reshape(-1, dim))
  out_upd = (tgt_BT.reshape(-1), do_BTD.reshape(-1, dim))
  return loss, pairs, in_upd, out_upd


def _apply(params, in_upd, out_upd):
  """Scatter-add the row updates; ids >= V (empty slots) are dropped."""
  return {
    "input": params["input"].at[in_upd[0]].add(in_upd[1], mode="drop"),
    "output": params["output"].at[out_upd[0]].add(out_upd[1], mode="drop"),
  }


def sgd_step(params, batch, lr, objective, axis_name=None):
  """One synchronous SGD step; with `axis_name`, updates from all devices are all-gathered."""
  loss, pairs, in_upd, out_upd = _row_updates(params, batch, lr, objective)
  if axis_name is not None:
    gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
    in_upd, out_upd = jax.tree.map(gather, (in_upd, out_upd))
    loss, pairs = jax.lax.psum((loss, pairs), axis_name)
  return _apply(params, in_upd, out_upd), loss, pairs


# ------------------------------------------------------------------ many steps, sharded
def make_train_chunk(objective: str, mesh: Mesh | None = None, axis: str = "data"):
  """jit-compiled `(params, chunk, lr_S) -> (params, loss_S, pairs_S)` over S scanned steps.

  chunk: a batch dict {w [S, B], ctx [S, B, C], neg [S, B, K]} or a list of them (e.g. one per
  window size, each with its own C); scan step s applies the list's batches s in order, at
  learning rate lr_S[s]. B must divide over the mesh axis. Params are donated and replicated;
  the centre axis B is sharded over `axis`.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective={objective!r}: choose one of {OBJECTIVES}.")

  def scan_steps(params, chunk, lr_S, axis_name):
    def body(p, xs):
      batches, lr = xs
      loss = pairs = 0.0
      for batch in (batches if isinstance(batches, (list, tuple)) else [batches]):
        p, l, n = sgd_step(p, batch, lr, objective, axis_name)
        loss, pairs = loss + l, pairs + n
      return p, (loss, pairs)
    params, (loss_S, pairs_S) = jax.lax.scan(body, params, (chunk, lr_S))
    return params, loss_S, pairs_S

  if mesh is None:
    fn = functools.partial(scan_steps, axis_name=None)
  else:
    # check_vma=False: all_gather's result is typed "varying" although every device receives
    # the same rows, so the replicas provably stay equal; the type checker cannot see that.
    fn = jax.shard_map(
        functools.partial(scan_steps, axis_name=axis), mesh=mesh,
        in_specs=(P(), P(None, axis), P()), out_specs=(P(), P(), P()), check_vma=False)
  return jax.jit(fn, donate_argnums=(0,))


def data_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (all by default)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (None, 0, -1) else num_devices
  if n > len(devices):
    raise ValueError(f"asked for {n} devices but only {len(devices)} exist; on CPU set "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={n}.")
  return Mesh(np.asarray(devices[:n]), (axis,))


# ------------------------------------------------------------------ feeding a Transformer
def _same_tokenizer(w2v_dir: str, model_dir: str) -> bool:
  """Whether two saved tokenizer directories hold byte-identical files."""
  names = sorted(os.listdir(w2v_dir))
  if names != sorted(os.listdir(model_dir)):
    return False
  for name in names:
    with open(os.path.join(w2v_dir, name), "rb") as a, open(os.path.join(model_dir, name), "rb") as b:
      if a.read() != b.read():
        return False
  return True


def load_embedding_matrix(workdir: str, vocab_size: int, d_model: int,
                          std: float | None = None, tokenizer_dir: str | None = None) -> np.ndarray:
  """The input vectors of a word2vec run in `workdir` as a [vocab_size, d_model] float32 matrix.

  The run must have used the same sentencepiece tokenizer (row i = token id i); when
  `tokenizer_dir` (the Transformer's saved tokenizer) is given, it must equal WORKDIR/tokenizer
  byte for byte. `std` rescales the matrix to that per-entry standard deviation (word2vec norms
  are far from a Transformer's init scale); None keeps the trained scale.
  """
  path = os.path.join(workdir, "embeddings.npy")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: train one with `python -m train.word2vec "
                            f"--config=configs/word2vec.py:tokens=sentencepiece --workdir=...`.")
  emb = np.load(path)
  meta_path = os.path.join(workdir, "vocab_kind.txt")
  kind = open(meta_path).read().strip() if os.path.exists(meta_path) else "unknown"
  if kind != "sentencepiece":
    raise ValueError(f"{workdir} holds a {kind!r} word2vec run; a Transformer needs one trained "
                     f"on its sentencepiece ids (configs/word2vec.py:tokens=sentencepiece).")
  mine = os.path.join(workdir, "tokenizer")
  if tokenizer_dir and os.path.isdir(tokenizer_dir) and os.path.isdir(mine) and \
      not _same_tokenizer(mine, tokenizer_dir):
    raise ValueError(f"{mine} differs from {tokenizer_dir}: the word2vec run used another "
                     "tokenizer; set its data.tokenizer_config to the Transformer's config.")
  if emb.shape != (vocab_size, d_model):
    raise ValueError(f"{path} has shape {emb.shape}, the model wants ({vocab_size}, {d_model}); "
                     f"train word2vec with --config.model.dim={d_model} and the model's tokenizer.")
  if std is not None:
    emb = emb / max(float(emb.std()), 1e-12) * std
  return emb.astype(np.float32)


def init_embeddings_from(params: dict, workdir: str, std: float | None = None,
                         tokenizer_dir: str | None = None) -> dict:
  """`params` with every token table (`embed/embedding`, `target_embed/embedding`, [V, d])
  replaced by the word2vec input vectors of `workdir`, rescaled to `std` (None: trained scale).

  Pure: returns a new dict and leaves the other leaves (and their shardings) untouched.
  """
  out, replaced = dict(params), []
  for name in ("embed", "target_embed"):
    if name in params and "embedding" in params[name]:
      table = params[name]["embedding"]
      emb = load_embedding_matrix(workdir, table.shape[0], table.shape[1], std=std,
                                  tokenizer_dir=tokenizer_dir)
      out[name] = {**params[name], "embedding": jnp.asarray(emb, table.dtype)}
      replaced.append(name)
  if not replaced:
    raise ValueError(f"no token embedding table (embed/embedding) among params {sorted(params)}; "
                     "model.embed_init needs a Transformer with an 'embed' module.")
  return out

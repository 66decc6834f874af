"""word2vec vectors as a Transformer's token embeddings (`config.model.embed_init=W2V_WORKDIR`).

The word2vec run must have trained on the Transformer's own sentencepiece ids (row i = token
id i): `python -m train.word2vec --config=configs/word2vec.py:tokens=sentencepiece`.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from train import layout


def _same_tokenizer(w2v_dir: str, model_dir: str) -> bool:
  """Whether two saved tokenizer directories hold byte-identical files."""
  names = sorted(os.listdir(w2v_dir))
  if names != sorted(os.listdir(model_dir)):
    return False
  for name in names:
    with (
      open(os.path.join(w2v_dir, name), 'rb') as a,
      open(os.path.join(model_dir, name), 'rb') as b,
    ):
      if a.read() != b.read():
        return False
  return True


def load_embedding_matrix(
  workdir: str,
  vocab_size: int,
  d_model: int,
  std: float | None = None,
  tokenizer_dir: str | None = None,
) -> np.ndarray:
  """The input vectors of a word2vec run in `workdir` as a [vocab_size, d_model] float32 matrix.

  The run must have used the same sentencepiece tokenizer (row i = token id i); when
  `tokenizer_dir` (the Transformer's saved tokenizer) is given, it must equal WORKDIR/tokenizer
  byte for byte. `std` rescales the matrix to that per-entry standard deviation (word2vec norms
  are far from a Transformer's init scale); None keeps the trained scale.
  """
  path = layout.embeddings_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} not found: train one with `python -m train.word2vec '
      f'--config=configs/word2vec.py:tokens=sentencepiece --workdir=...`.'
    )
  emb = np.load(path)
  meta_path = layout.vocab_kind_path(workdir)
  kind = open(meta_path).read().strip() if os.path.exists(meta_path) else 'unknown'
  if kind != 'sentencepiece':
    raise ValueError(
      f'{workdir} holds a {kind!r} word2vec run; a Transformer needs one trained '
      f'on its sentencepiece ids (configs/word2vec.py:tokens=sentencepiece).'
    )
  mine = layout.tokenizer_dir(workdir)
  if (
    tokenizer_dir
    and os.path.isdir(tokenizer_dir)
    and os.path.isdir(mine)
    and not _same_tokenizer(mine, tokenizer_dir)
  ):
    raise ValueError(
      f'{mine} differs from {tokenizer_dir}: the word2vec run used another '
      "tokenizer; set its data.tokenizer_config to the Transformer's config."
    )
  if emb.shape != (vocab_size, d_model):
    raise ValueError(
      f'{path} has shape {emb.shape}, the model wants ({vocab_size}, {d_model}); '
      f"train word2vec with --config.model.dim={d_model} and the model's tokenizer."
    )
  if std is not None:
    emb = emb / max(float(emb.std()), 1e-12) * std
  return emb.astype(np.float32)


def init_embeddings_from(
  params: dict, workdir: str, std: float | None = None, tokenizer_dir: str | None = None
) -> dict:
  """`params` with every token table (`embed/embedding`, `target_embed/embedding`, [V, d])
  replaced by the word2vec input vectors of `workdir`, rescaled to `std` (None: trained scale).

  Pure: returns a new dict and leaves the other leaves (and their shardings) untouched.
  """
  out, replaced = dict(params), []
  for name in ('embed', 'target_embed'):
    if name in params and 'embedding' in params[name]:
      table = params[name]['embedding']
      emb = load_embedding_matrix(
        workdir, table.shape[0], table.shape[1], std=std, tokenizer_dir=tokenizer_dir
      )
      out[name] = {**params[name], 'embedding': jnp.asarray(emb, table.dtype)}
      replaced.append(name)
  if not replaced:
    raise ValueError(
      f'no token embedding table (embed/embedding) among params {sorted(params)}; '
      "model.embed_init needs a Transformer with an 'embed' module."
    )
  return out

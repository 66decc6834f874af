"""A throwaway model and batch for trainer tests that must not depend on model/ or data.

The model follows the model/ contract (batch dict in, [B, T, vocab] float32 logits out, or with
`return_hidden=True` the final states and the tied output table; params boxed with logical axis
names) with just enough structure to exercise every part of the trainer: embeddings, a sharded
MLP, dropout, and a source-dependent term.
"""

import numpy as np
from flax import linen as nn
import jax.numpy as jnp

VOCAB = 32


class ToySeq2Seq(nn.Module):
  vocab: int = VOCAB
  d: int = 16
  hidden: int = 32
  dropout: float = 0.1

  @nn.compact
  def __call__(self, batch, deterministic=True, return_hidden=False):
    init = nn.initializers.normal(0.5)
    emb = self.param(
      'embed', nn.with_logical_partitioning(init, ('vocab', 'embed')), (self.vocab, self.d)
    )
    w1 = self.param(
      'w1', nn.with_logical_partitioning(init, ('embed', 'mlp')), (self.d, self.hidden)
    )
    w2 = self.param(
      'w2', nn.with_logical_partitioning(init, ('mlp', 'embed')), (self.hidden, self.d)
    )
    src = emb[batch['inputs']] * (batch['inputs'] > 0)[..., None]
    ctx = src.sum(1, keepdims=True) / jnp.maximum((batch['inputs'] > 0).sum(1), 1)[:, None, None]
    x = emb[batch['decoder_inputs']] + ctx
    h = nn.relu(x @ w1)
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    x = x + h @ w2
    if return_hidden:
      return x, emb
    return (x @ emb.T).astype(jnp.float32)


def make_batch(rows=8, src_len=6, tgt_len=7, seed=0):
  """Random encoder-decoder batch obeying the contract (eos=1, bos=2, pads at the end)."""
  rng = np.random.default_rng(seed)
  src = rng.integers(4, VOCAB, (rows, src_len)).astype(np.int32)
  tgt = rng.integers(4, VOCAB, (rows, tgt_len)).astype(np.int32)
  for i in range(rows):  # ragged lengths, so normalising by real tokens matters
    n = int(rng.integers(2, tgt_len))
    tgt[i, n - 1], tgt[i, n:] = 1, 0
    m = int(rng.integers(2, src_len))
    src[i, m - 1], src[i, m:] = 1, 0
  dec = np.concatenate([np.full((rows, 1), 2, np.int32), tgt[:, :-1]], 1) * (tgt > 0)
  dec[:, 0] = 2
  pos = lambda a: np.where(a > 0, np.arange(a.shape[1])[None], 0).astype(np.int32)
  return {
    'inputs': src,
    'inputs_segment': (src > 0).astype(np.int32),
    'inputs_position': pos(src),
    'decoder_inputs': dec,
    'targets': tgt,
    'targets_segment': (tgt > 0).astype(np.int32),
    'targets_position': pos(tgt),
    'weights': (tgt > 0).astype(np.float32),
  }

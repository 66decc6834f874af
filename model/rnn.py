"""GRU / LSTM encoder-decoder with additive attention (Bahdanau et al. 2015): the pre-Transformer
baseline, behind the same `__call__ / encode / decode` interface as model/transformer.py.

- Encoder: bidirectional cell over the embedded source; states [B,S,2H].
- Decoder step: context c_t = attention(s_{t-1}, encoder states) with v.tanh(W_q s + W_k h_j);
  s_t = cell(s_{t-1}, [emb(y_{t-1}); c_t]); output tanh(W_o [s_t; c_t; emb]) -> vocabulary
  (tied to the embedding when `tie_output`).
- Packed rows: the recurrent state restarts (at zero) wherever the segment id changes, in both
  directions, and the decoder attends only to its own segment's source.
- Decoding cache: the recurrent state, the last segment id and W_k h_j (computed once per source).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.dropout import Dropout
from model.layers import DenseGeneral, Embed, constrain
from model.transformer import segments_positions


def gru_update(gates_x, h_state, wh, b):
  """One GRU step (Cho et al. 2014). gates_x = x.W_i [B,3H]; h_state [B,1,H] -> new state."""
  h = h_state[:, 0]
  xr, xz, xn = jnp.split(gates_x, 3, axis=-1)
  hr, hz, hn = jnp.split(h @ wh, 3, axis=-1)
  br, bz, bn = jnp.split(b, 3)
  r, z = jax.nn.sigmoid(xr + hr + br), jax.nn.sigmoid(xz + hz + bz)
  n = jnp.tanh(xn + bn + r * hn)
  return ((1.0 - z) * n + z * h)[:, None]


def lstm_update(gates_x, hc_state, wh, b):
  """One LSTM step. hc_state [B,2,H] holds (h, c)."""
  h, c = hc_state[:, 0], hc_state[:, 1]
  i, f, g, o = jnp.split(gates_x + h @ wh + b, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return jnp.stack([h, c], axis=1)


class Cell(nn.Module):
  """Recurrent weights of one GRU/LSTM; `in_features` inputs are projected by `input_proj`."""

  kind: str
  hidden: int

  def setup(self):
    g = 3 if self.kind == 'gru' else 4
    self.wh = self.param(
      'recurrent',
      nn.with_logical_partitioning(nn.initializers.orthogonal(), (None, 'mlp')),
      (self.hidden, g * self.hidden),
    )
    self.b = self.param(
      'bias',
      nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp',)),
      (g * self.hidden,),
    )
    self.n_state = 1 if self.kind == 'gru' else 2

  def updater(self):
    """A pure step function closed over the weights (safe to call inside lax.scan)."""
    fn, wh, b = (gru_update if self.kind == 'gru' else lstm_update), self.wh, self.b
    return lambda gates_x, state: fn(gates_x, state, wh, b)

  def __call__(self, gates_x, seg, state0=None, prev_seg=None):
    """Run over time: gates_x [B,T,G*H], seg [B,T] -> (outputs h [B,T,H], final state, last seg)."""
    b = gates_x.shape[0]
    state0 = jnp.zeros((b, self.n_state, self.hidden), gates_x.dtype) if state0 is None else state0
    prev_seg = jnp.zeros((b,), jnp.int32) if prev_seg is None else prev_seg
    update = self.updater()

    def step(carry, xs):
      state, prev = carry
      gx, sg = xs
      state = jnp.where((sg != prev)[:, None, None], 0.0, state)  # new segment: fresh state
      state = update(gx, state)
      return (state, sg), state[:, 0]

    (state, last), hs = jax.lax.scan(
      step, (state0, prev_seg), (jnp.swapaxes(gates_x, 0, 1), jnp.swapaxes(seg, 0, 1))
    )
    return jnp.swapaxes(hs, 0, 1), state, last


class RNNSeq2Seq(nn.Module):
  cfg: object

  def setup(self):
    cfg, h = self.cfg, self.cfg.rnn_hidden
    g = 3 if cfg.rnn_cell == 'gru' else 4
    gates = lambda name, ax: DenseGeneral((g * h,), (ax, 'mlp'), name=name)
    self.dropout = Dropout(cfg.dropout, cfg.dropout_mask)
    self.embed = Embed(cfg.vocab_size, cfg.d_model)
    self.target_embed = self.embed if cfg.share_embeddings else Embed(cfg.vocab_size, cfg.d_model)
    self.fwd_in, self.bwd_in = gates('fwd_in', 'embed'), gates('bwd_in', 'embed')
    self.fwd, self.bwd = Cell(cfg.rnn_cell, h), Cell(cfg.rnn_cell, h)
    self.dec_in_x = gates('dec_in_x', 'embed')
    fan_in = lambda: nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
    self.dec_in_ctx = self.param(
      'dec_in_ctx', nn.with_logical_partitioning(fan_in(), (None, 'mlp')), (2 * h, g * h)
    )
    self.dec = Cell(cfg.rnn_cell, h)
    self.att_q = self.param('att_q', nn.with_logical_partitioning(fan_in(), (None, 'mlp')), (h, h))
    self.att_k = DenseGeneral((h,), (None, 'mlp'), name='att_k')
    self.att_v = self.param(
      'att_v', nn.with_logical_partitioning(nn.initializers.normal(h**-0.5), ('mlp',)), (h,)
    )
    self.out = DenseGeneral((cfg.d_model,), (None, 'embed'), use_bias=True, name='out')
    if not cfg.tie_output:
      self.logits_proj = DenseGeneral((cfg.vocab_size,), ('embed', 'vocab'), name='logits')

  def _drop(self, x, deterministic):
    return self.dropout(x, deterministic=deterministic)

  def _embed(self, table, ids, deterministic):
    x = table(ids)
    if self.cfg.scale_embeddings:
      x = x * jnp.sqrt(jnp.float32(self.cfg.d_model))
    return self._drop(x, deterministic)

  def encode(self, batch, deterministic=True):
    ids, seg, _ = segments_positions(batch, 'inputs', 'inputs')
    x = self._embed(self.embed, ids, deterministic)
    fwd, _, _ = self.fwd(self.fwd_in(x), seg)
    bwd, _, _ = self.bwd(self.bwd_in(x)[:, ::-1], seg[:, ::-1])
    enc = jnp.concatenate([fwd, bwd[:, ::-1]], axis=-1)
    return constrain(self._drop(enc, deterministic), ('batch', 'length', 'mlp'))

  def _decoder(self, ids, seg, encoded, keys, src_seg, state0, prev_seg, deterministic):
    """Teacher-forced decoder over ids [B,T] from (state0, prev_seg). Returns logits, state, seg."""
    emb = self._embed(self.target_embed, ids, deterministic)
    gx = self.dec_in_x(emb)  # the embedding part of the cell input, all steps
    w_ctx, w_q, v_att, update = self.dec_in_ctx, self.att_q, self.att_v, self.dec.updater()
    b = ids.shape[0]
    state0 = (
      jnp.zeros((b, (1 if self.cfg.rnn_cell == 'gru' else 2), self.cfg.rnn_hidden))
      if state0 is None
      else state0
    )
    prev_seg = jnp.zeros((b,), jnp.int32) if prev_seg is None else prev_seg

    def step(carry, xs):
      state, prev = carry
      g, sg = xs
      state = jnp.where((sg != prev)[:, None, None], 0.0, state)
      q = state[:, 0] @ w_q  # [B,H]
      score = jnp.tanh(q[:, None] + keys) @ v_att  # [B,S]
      ok = (src_seg == sg[:, None]) & (src_seg > 0)
      alpha = jax.nn.softmax(jnp.where(ok, score, -1e9), axis=-1)
      ctx = jnp.einsum('bs,bsd->bd', alpha, encoded)
      state = update(g + ctx @ w_ctx, state)
      return (state, sg), (state[:, 0], ctx)

    (state, last), (hs, ctxs) = jax.lax.scan(
      step, (state0, prev_seg), (jnp.swapaxes(gx, 0, 1), jnp.swapaxes(seg, 0, 1))
    )
    hs, ctxs = jnp.swapaxes(hs, 0, 1), jnp.swapaxes(ctxs, 0, 1)
    out = jnp.tanh(self.out(jnp.concatenate([hs, ctxs, emb], axis=-1)))
    out = self._drop(out, deterministic)
    logits = self.target_embed.attend(out) if self.cfg.tie_output else self.logits_proj(out)
    return constrain(logits.astype(jnp.float32), ('batch', 'length', 'vocab')), state, last

  def __call__(self, batch, deterministic=True):
    encoded = self.encode(batch, deterministic)
    _, src_seg, _ = segments_positions(batch, 'inputs', 'inputs')
    ids, seg, _ = segments_positions(batch, 'decoder_inputs', 'targets')
    logits, _, _ = self._decoder(
      ids, seg, encoded, self.att_k(encoded), src_seg, None, None, deterministic
    )
    return logits

  @nn.compact
  def decode(self, tokens, positions, segments, encoded, src_segments, max_cache_len):
    del positions, max_cache_len  # order is the recurrence; no K/V list to size
    b = tokens.shape[0]
    keys = self.variable('cache', 'keys', lambda: self.att_k(encoded))
    state = self.variable(
      'cache',
      'state',
      jnp.zeros,
      (b, (1 if self.cfg.rnn_cell == 'gru' else 2), self.cfg.rnn_hidden),
    )
    prev = self.variable('cache', 'prev_segment', jnp.zeros, (b,), jnp.int32)
    logits, state.value, prev.value = self._decoder(
      tokens, segments, encoded, keys.value, src_segments, state.value, prev.value, True
    )
    return logits

"""Training metrics: throughput / MFU bookkeeping, the console line and TensorBoard scalars.

FLOPs per token come from `flops_per_token` (analytic: encoder, decoder self- and
cross-attention, FFN and logits; training = 3 x forward). MFU divides achieved FLOP/s by the
accelerator's dense peak; on CPU there is no meaningful peak, so achieved GFLOP/s is shown.
"""

import math
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from model import attention as attn_lib
from model.config import ModelConfig, make_config
from train import layout

# Dense peak TFLOP/s per chip by (device_kind substring, compute dtype). float32 on NVIDIA means
# TF32 tensor cores (XLA's default matmul precision there). First match wins: order matters.
PEAK_TFLOPS = (
  ('H200', {'bfloat16': 989.0, 'float32': 494.0}),
  ('H100 PCIe', {'bfloat16': 756.0, 'float32': 378.0}),  # before 'H100': first match wins
  ('H100 NVL', {'bfloat16': 835.0, 'float32': 418.0}),
  ('H100', {'bfloat16': 989.0, 'float32': 494.0}),  # SXM
  ('A100', {'bfloat16': 312.0, 'float32': 156.0}),
  ('TPU v5p', {'bfloat16': 459.0, 'float32': 459.0}),
  ('TPU v5 lite', {'bfloat16': 197.0, 'float32': 197.0}),  # v5e reports "TPU v5 lite"
  ('TPU v5e', {'bfloat16': 197.0, 'float32': 197.0}),
  ('TPU v5', {'bfloat16': 459.0, 'float32': 459.0}),  # v5p reports "TPU v5"
  ('TPU v4', {'bfloat16': 275.0, 'float32': 275.0}),
)


def peak_flops(device_kind, dtype='float32'):
  """Peak FLOP/s of one device of this kind, or None when unknown (CPU, other chips)."""
  for name, table in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return table.get(dtype, table['bfloat16']) * 1e12
  return None


# ----------------------------------------------------------------------------- analytic FLOPs


def _attention_flops(mc: ModelConfig, q_len: float, kv_len: float, proj_kv: bool) -> float:
  """Forward FLOPs (2 per multiply-add) of one attention block for q_len queries over kv_len
  keys."""
  d, h, k, hd = mc.d_model, mc.num_heads, mc.kv_heads, mc.hd
  kind = attn_lib.KINDS[mc.attention]
  f = 2 * q_len * d * h * hd * 2  # query and output projections
  if proj_kv:
    f += 2 * kv_len * d * k * hd * (1 if kind.shared_qk else 2)
  if kind.extra_flops is not None and kind.conv is None:
    f += kind.extra_flops(mc, q_len, kv_len)
  f += 2 * q_len * kv_len * h * hd * 2  # scores and weighted sum of values
  return f


def _conv_flops(mc: ModelConfig, n: float, size: int) -> float:
  """Forward FLOPs of one convolution block (Wu et al. 2019) over n tokens with `size` taps."""
  d = mc.d_model
  f = 2 * n * d * 2 * d + 2 * n * d * d  # GLU input projection (d -> 2d) and output projection
  f += 2 * n * size * d  # the depthwise convolution
  kind = attn_lib.KINDS[mc.attention]
  if kind.extra_flops is not None:
    f += kind.extra_flops(mc, n, size)
  return f


def _self_mixer_flops(mc: ModelConfig, n: float, layer: int) -> float:
  """Self-attention of `layer`, or the convolution block that takes its place."""
  if attn_lib.KINDS[mc.attention].conv is not None:
    return _conv_flops(mc, n, mc.kernel_size(layer))
  return _attention_flops(mc, n, n, True)


def _ffn_flops(mc: ModelConfig, n: float) -> float:
  return 2 * n * mc.d_model * mc.d_ff * (3 if mc.ffn == 'swiglu' else 2)


def flops_per_token(cfg: Any, src_len: int, tgt_len: int, training: bool = True) -> float:
  """Analytic matmul FLOPs per target token for one (source, target) pair of these lengths.

  Counts encoder (amortised over the target tokens), decoder self-attention (full T x T, as in
  the usual MFU convention), cross-attention (K/V projected once per source) and the output
  logits; training multiplies the forward pass by 3 (backward = 2x forward). Decoder-only models
  see one sequence of src_len + tgt_len tokens, all counted as targets. Norms, softmax and
  embedding lookups are ignored.
  """
  mc = make_config(cfg)
  s, t, d, v = float(src_len), float(tgt_len), mc.d_model, mc.vocab_size
  if mc.arch == 'rnn':
    hid, gates = mc.rnn_hidden, (3 if mc.rnn_cell == 'gru' else 4)
    enc = 2 * s * 2 * gates * (d + hid) * hid * 2  # two directions
    dec = 2 * t * gates * (d + 2 * hid + hid) * hid  # input = embedding + context
    att = 2 * t * s * hid * 2 + 2 * s * 2 * hid * hid + t * s * hid * 3 + 2 * t * 2 * hid * hid
    out = 2 * t * (hid + 2 * hid) * d + 2 * t * d * v
    total, tokens = enc + dec + att + out, t
  elif mc.arch == 'decoder_only':
    n = s + t
    layers = sum(_self_mixer_flops(mc, n, i) + _ffn_flops(mc, n) for i in range(mc.dec_layers))
    total, tokens = layers + 2 * n * d * v, n
  else:
    enc = sum(_self_mixer_flops(mc, s, i) + _ffn_flops(mc, s) for i in range(mc.enc_layers))
    dec = sum(
      _self_mixer_flops(mc, t, i) + _attention_flops(mc, t, s, True) + _ffn_flops(mc, t)
      for i in range(mc.dec_layers)
    )
    total, tokens = enc + dec + 2 * t * d * v, t
  return (3.0 if training else 1.0) * total / tokens


def batch_flops(model_cfg, batch):
  """Training FLOPs of one batch as executed (padded shapes), from the model's analytic count."""
  rows, tgt_len = batch['targets'].shape
  src_len = batch['inputs'].shape[1] if 'inputs' in batch else 0
  if model_cfg.arch == 'decoder_only':
    # The decoder-only batch already holds prompt + answer in `targets`.
    return flops_per_token(model_cfg, 0, tgt_len) * rows * tgt_len
  return flops_per_token(model_cfg, src_len, tgt_len) * rows * tgt_len


def format_eta(seconds):
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  return f'{h}h{rem // 60:02d}m' if h else f'{rem // 60}m{rem % 60:02d}s'


class Meter:
  """Accumulates host-side counts between log lines and turns them into rates."""

  def __init__(self, total_steps, num_devices, device_kind, dtype):
    self.total_steps = total_steps
    self.num_devices = num_devices
    self.peak = peak_flops(device_kind, dtype)
    self.reset(time.time())

  def reset(self, now):
    self.t0, self.steps, self.tokens, self.flops = now, 0, 0.0, 0.0

  def add(self, tokens, flops):
    self.steps += 1
    self.tokens += tokens
    self.flops += flops

  def rates(self, step, now=None):
    """{'tokens_per_s', 'step_time', 'gflops_per_s', 'mfu' (None on CPU), 'eta_s'}."""
    now = time.time() if now is None else now
    dt = max(now - self.t0, 1e-9)
    step_time = dt / max(self.steps, 1)
    flops_s = self.flops / dt
    return {
      'tokens_per_s': self.tokens / dt,
      'step_time': step_time,
      'gflops_per_s': flops_s / 1e9,
      'mfu': flops_s / (self.peak * self.num_devices) if self.peak else None,
      'eta_s': step_time * max(self.total_steps - step, 0),
    }


def console_line(step, total, metrics, rates):
  util = (
    f'mfu {100 * rates["mfu"]:.1f}%'
    if rates.get('mfu') is not None
    else f'{rates["gflops_per_s"]:.1f} GFLOP/s'
  )
  return (
    f'step {step}/{total} | loss {metrics["loss"]:.4f} | lr {metrics["lr"]:.2e} | '
    f'gnorm {metrics["grad_norm"]:.3f} | {rates["tokens_per_s"]:,.0f} tgt tok/s | '
    f'{1000 * rates["step_time"]:.0f} ms/step | {util} | eta {format_eta(rates["eta_s"])}'
  )


class Writer:
  """TensorBoard scalars under WORKDIR/tb (process 0 only; others write nothing)."""

  def __init__(self, workdir):
    self._w = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      self._w = SummaryWriter(os.path.join(workdir, layout.TB_DIR), flush_secs=30)

  def scalars(self, step, values, prefix):
    if self._w is None:
      return
    for k, v in values.items():
      if v is not None and np.isfinite(v):
        self._w.add_scalar(f'{prefix}/{k}', float(v), int(step))

  def flush(self):
    if self._w is not None:
      self._w.flush()

  def close(self):
    if self._w is None:
      return
    w, self._w = self._w, None
    try:
      w.close()
    except OSError:
      # The last events could not be written (a full disk, say). tensorboardX's close stops its
      # writer threads only after a good flush; a thread left running fails again, with a
      # traceback, when the interpreter exits. Stop them here, then report the error.
      for file_writer in (w.all_writers or {}).values():
        worker = getattr(file_writer.event_writer, '_worker', None)
        if worker is not None and worker.is_alive():
          worker.stop()
      raise


def log(text):
  """Console progress: absl logging (timestamped) on process 0."""
  if jax.process_index() == 0:
    logging.info('%s', text)

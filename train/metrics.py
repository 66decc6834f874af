"""Training metrics: throughput / MFU bookkeeping, the console line and TensorBoard scalars.

FLOPs per token come from `model.flops_per_token` (analytic: encoder, decoder self- and
cross-attention, FFN and logits; training = 3 x forward). MFU divides achieved FLOP/s by the
accelerator's dense peak; on CPU there is no meaningful peak, so achieved GFLOP/s is shown.
"""
import math
import os
import time

import jax
import numpy as np
from absl import logging

from train import layout

# Dense peak TFLOP/s per chip by (device_kind substring, compute dtype). float32 on NVIDIA means
# TF32 tensor cores (XLA's default matmul precision there). First match wins: order matters.
PEAK_TFLOPS = (
    ('H200', {'bfloat16': 989.0, 'float32': 494.0}),
    ('H100 PCIe', {'bfloat16': 756.0, 'float32': 378.0}),  # before 'H100': first match wins
    ('H100 NVL', {'bfloat16': 835.0, 'float32': 418.0}),
    ('H100', {'bfloat16': 989.0, 'float32': 494.0}),   # SXM
    ('A100', {'bfloat16': 312.0, 'float32': 156.0}),
    ('TPU v5p', {'bfloat16': 459.0, 'float32': 459.0}),
    ('TPU v5 lite', {'bfloat16': 197.0, 'float32': 197.0}),   # v5e reports "TPU v5 lite"
    ('TPU v5e', {'bfloat16': 197.0, 'float32': 197.0}),
    ('TPU v5', {'bfloat16': 459.0, 'float32': 459.0}),        # v5p reports "TPU v5"
    ('TPU v4', {'bfloat16': 275.0, 'float32': 275.0}),
)


def peak_flops(device_kind, dtype='float32'):
  """Peak FLOP/s of one device of this kind, or None when unknown (CPU, other chips)."""
  for name, table in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return table.get(dtype, table['bfloat16']) * 1e12
  return None


def batch_flops(model_cfg, batch):
  """Training FLOPs of one batch as executed (padded shapes), from the model's analytic count."""
  import model  # pylint: disable=import-outside-toplevel
  rows, tgt_len = batch['targets'].shape
  src_len = batch['inputs'].shape[1] if 'inputs' in batch else 0
  if model_cfg.arch == 'decoder_only':
    # The decoder-only batch already holds prompt + answer in `targets`.
    return model.flops_per_token(model_cfg, 0, tgt_len) * rows * tgt_len
  return model.flops_per_token(model_cfg, src_len, tgt_len) * rows * tgt_len


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
    return {'tokens_per_s': self.tokens / dt, 'step_time': step_time,
            'gflops_per_s': flops_s / 1e9,
            'mfu': flops_s / (self.peak * self.num_devices) if self.peak else None,
            'eta_s': step_time * max(self.total_steps - step, 0)}


def console_line(step, total, metrics, rates):
  util = (f'mfu {100 * rates["mfu"]:.1f}%' if rates.get('mfu') is not None
          else f'{rates["gflops_per_s"]:.1f} GFLOP/s')
  return (f'step {step}/{total} | loss {metrics["loss"]:.4f} | lr {metrics["lr"]:.2e} | '
          f'gnorm {metrics["grad_norm"]:.3f} | {rates["tokens_per_s"]:,.0f} tgt tok/s | '
          f'{1000 * rates["step_time"]:.0f} ms/step | {util} | eta {format_eta(rates["eta_s"])}')


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
    if self._w is not None:
      self._w.close()


def log(text):
  """Console progress: absl logging (timestamped) on process 0."""
  if jax.process_index() == 0:
    logging.info('%s', text)

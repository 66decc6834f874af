"""attnlab models: pure Flax Linen modules built from `config.model`.

`build_model(cfg)` validates the config and returns the module; `count_params(params)` counts
parameters. Analytic FLOPs (for MFU) are measurements: train/metrics.py `flops_per_token`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from model.config import ModelConfig, make_config

__all__ = ['build_model', 'count_params', 'ModelConfig', 'make_config']


def build_model(cfg: Any) -> nn.Module:
  """config.model (ConfigDict/dict/ModelConfig) -> module; ValueError names a bad key and the
  choices."""
  mc = make_config(cfg)
  if mc.arch == 'rnn':
    from model.rnn import RNNSeq2Seq

    return RNNSeq2Seq(mc)
  from model.transformer import DecoderOnly, EncoderDecoder

  return EncoderDecoder(mc) if mc.arch == 'encoder_decoder' else DecoderOnly(mc)


def count_params(params: Any) -> int:
  """Number of scalars in a (boxed or unboxed) parameter tree."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
  return int(sum(math.prod(x.shape) for x in leaves))

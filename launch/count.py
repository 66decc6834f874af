"""Print the parameter count of a model config: `python -m launch.count [key=value ...]`.

Defaults to the paper's base Transformer (d_model 512, 6+6 layers, 8 heads, d_ff 2048, shared
37000-token vocabulary, tied output). Shapes only (jax.eval_shape): nothing is allocated.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import model

BASE = dict(
  arch='encoder_decoder',
  vocab_size=37000,
  d_model=512,
  num_heads=8,
  num_layers=6,
  d_ff=2048,
  position='sinusoidal',
  share_embeddings=True,
  tie_output=True,
)


def param_count(cfg: dict) -> int:
  module = model.build_model(cfg)
  batch = {k: np.ones((1, 4), np.int32) for k in ('inputs', 'decoder_inputs')}
  shapes = jax.eval_shape(module.init, jax.random.key(0), batch)
  return model.count_params(shapes['params'])


def main(argv: list[str]) -> None:
  cfg = dict(BASE)
  for arg in argv:
    key, _, value = arg.partition('=')
    cfg[key] = (
      type(BASE[key])(value)
      if key in BASE and not isinstance(BASE[key], bool)
      else (
        value == 'True'
        if value in ('True', 'False')
        else (int(value) if value.isdigit() else value)
      )
    )
  print(f'{param_count(cfg):,} parameters: {cfg}')


if __name__ == '__main__':
  main(sys.argv[1:])

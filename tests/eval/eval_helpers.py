"""Small shared pieces for the evaluation tests."""


class CharTokenizer:
  """Bytes + 4 (so pad=0, eos=1, bos=2, unk=3 stay free), as in the token-id contract."""

  vocab_size = 260

  def encode(self, s, side=None):
    del side
    return [b + 4 for b in s.encode('utf-8')]

  def decode(self, ids, side=None):
    del side
    out = []
    for t in ids:
      if t == 1:
        break
      if t >= 4:
        out.append(t - 4)
    return bytes(out).decode('utf-8', errors='replace')


def tiny_model_cfg(**overrides):
  """A 2-layer, d_model=32 encoder-decoder config dict for build_model."""
  cfg = dict(
    vocab_size=260,
    d_model=32,
    num_heads=4,
    num_layers=2,
    d_ff=64,
    dropout=0.0,
    position='sinusoidal',
  )
  cfg.update(overrides)
  return cfg


def random_params(module, batch, seed=0, scale=0.3):
  """Parameters of the right shapes, drawn with NumPy: `module.init` would compile the whole
  initialiser (slow on a loaded CPU) and the tests only need some values."""
  import flax.linen as nn
  import jax
  import numpy as np

  shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), batch)['params'])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * scale).astype(s.dtype), shapes)

"""RNN encoder-decoder: cached decoding, packing, padding, causality, bidirectional encoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from test_transformer import batches  # tests/model is on sys.path (no packages)

from tests.xla_flags import CHEAP_OPTIONS


@functools.lru_cache(maxsize=None)
def results(cell):
  m = model.build_model(
    dict(
      arch='rnn',
      rnn_cell=cell,
      vocab_size=16,
      d_model=8,
      rnn_hidden=6,
      dropout=0.0,
      share_embeddings=False,
      tie_output=False,
    )
  )
  packed, sep, padded = batches()

  @functools.partial(jax.jit, compiler_options=CHEAP_OPTIONS)
  def run(key):
    params = m.init(key, sep)
    out = dict(
      packed=m.apply(params, packed), sep=m.apply(params, sep), padded=m.apply(params, padded)
    )
    encoded = m.apply(params, sep, method='encode')
    cache, steps = None, []
    for a, b in ((0, 2), (2, 3), (3, 4)):
      v = dict(params) if cache is None else {**params, 'cache': cache}
      lg, mut = m.apply(
        v,
        sep['decoder_inputs'][:, a:b],
        sep['targets_position'][:, a:b],
        sep['targets_segment'][:, a:b],
        encoded,
        sep['inputs_segment'],
        4,
        method='decode',
        mutable=['cache'],
      )
      cache, steps = mut['cache'], steps + [lg]
    out['cached'] = jnp.concatenate(steps, axis=1)
    boxed = params['params']['target_embed']['embedding']

    def row0(table):
      p = {
        'params': {**params['params'], 'target_embed': {'embedding': boxed.replace_boxed(table)}}
      }
      return m.apply(p, sep)[0].sum(-1)

    out['jac'] = jax.jacrev(row0)(boxed.unbox())
    src_boxed = params['params']['embed']['embedding']

    def enc0(table):
      p = {'params': {**params['params'], 'embed': {'embedding': src_boxed.replace_boxed(table)}}}
      return m.apply(p, sep, method='encode')[0].sum(-1)  # [S]

    out['enc_jac'] = jax.jacrev(enc0)(src_boxed.unbox())
    return out

  return jax.tree_util.tree_map(np.asarray, run(jax.random.key(0)))


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_rnn_properties(cell):
  r = results(cell)
  sep = batches()[1]
  valid = np.asarray(sep['targets_segment'])[:, :4] > 0
  np.testing.assert_allclose(r['cached'][valid], r['sep'][:, :4][valid], atol=1e-5)
  np.testing.assert_allclose(r['packed'][0, :4], r['sep'][0, :4], atol=1e-5)
  np.testing.assert_allclose(r['packed'][0, 4:7], r['sep'][1, :3], atol=1e-5)
  np.testing.assert_allclose(r['padded'][0, :4], r['sep'][0, :4], atol=1e-5)
  np.testing.assert_allclose(r['padded'][1, :3], r['sep'][1, :3], atol=1e-5)
  ids = np.asarray(sep['decoder_inputs'][0])
  dep = np.abs(r['jac'][:, ids]).sum(-1)
  assert np.all(dep[np.triu_indices(len(ids), 1)] == 0.0) and np.all(np.diag(dep) > 0)
  src = np.asarray(sep['inputs'][0])  # distinct ids: the encoder sees both directions
  enc_dep = np.abs(r['enc_jac'][:, src]).sum(-1)
  assert np.all(enc_dep > 0)

r"""Bit-identity check for refactors of model/: save outputs before a change, compare after.

  PYTHONPATH=/tmp/orig nice -n 19 .venv/bin/python tests/model/bit_identity.py \
      save /tmp/bitident.npz
      # before (/tmp/orig: `git archive HEAD model | tar -x -C /tmp/orig`)
  nice -n 19 .venv/bin/python tests/model/bit_identity.py check /tmp/bitident.npz  # after

For every (attention kind x position scheme) pair the model accepts, both Transformer
architectures, on a packed batch (two segments in one row) and a padded one: forward logits,
one training step's loss and gradients (dropout and attention dropout on, so the einsum path and
the dropout masks are covered), and three cached decoding steps. `check` asserts
`np.array_equal` on every array (the jaxpr as text). Not collected by pytest (no `test_` prefix).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import model
from model import config as cfg_lib

# Fast compiles: the check compares before with after under the same options.
OPTS = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
# Every case is compared by its traced program (jaxpr text: equal programs give equal bits);
# these also by value (forward logits, loss, every gradient, cached decoding), ~1 min each.
NUMERIC = ('encoder_decoder-dot-shaw', 'decoder_only-linear-learned')


# Each attention kind and each position scheme at least once, on both architectures (tracing
# every allowed pair x 2 architectures takes ~25 min on a loaded 2-core CPU; pass --all for it).
SUBSET = {
  ('encoder_decoder', 'dot', 'shaw'),
  ('encoder_decoder', 'dot', 't5'),
  ('encoder_decoder', 'dot', 'rotary'),
  ('encoder_decoder', 'additive', 'learned'),
  ('encoder_decoder', 'linear', 'rotary'),
  ('encoder_decoder', 'shared_qk', 'alibi'),
  ('decoder_only', 'dot', 'sinusoidal'),
  ('decoder_only', 'dot', 'none'),
  ('decoder_only', 'dot', 'alibi'),
  ('decoder_only', 'additive', 't5'),
  ('decoder_only', 'linear', 'none'),
  ('decoder_only', 'linear', 'learned'),
  ('decoder_only', 'shared_qk', 'shaw'),
}
ALL = False


def _cases():
  allowed = [
    (a, p) for a in cfg_lib.ATTENTIONS for p in cfg_lib.POSITIONS if p not in cfg_lib.UNSUPPORTED[a]
  ]
  for arch in ('encoder_decoder', 'decoder_only'):
    for i, (a, p) in enumerate(allowed):
      if not ALL and (arch, a, p) not in SUBSET:
        continue
      cfg = dict(
        arch=arch,
        vocab_size=16,
        d_model=16,
        num_heads=4,
        num_layers=1,
        d_ff=16,
        dropout=0.1,
        attention_dropout=0.1,
        attention=a,
        position=p,
        max_len=32,
        shaw_max_distance=2,
        t5_num_buckets=8,
        t5_max_distance=16,
        num_kv_heads=None if a == 'shared_qk' else (4, 2, 1)[i % 3],
        norm=('post', 'pre')[i % 2],
        scan_layers=i % 4 == 1,
      )
      cfg['num_layers'] = 2 if cfg['scan_layers'] else 1
      yield f'{arch}-{a}-{p}', cfg
  # The explicit einsum path of plain dot attention, and one mixed encoder/decoder scheme.
  yield (
    'einsum-dot-rotary',
    dict(
      arch='decoder_only',
      vocab_size=16,
      d_model=16,
      num_heads=4,
      num_layers=1,
      d_ff=16,
      attention='dot',
      position='rotary',
      attention_impl='einsum',
    ),
  )
  yield (
    'mixed-t5-shaw',
    dict(
      arch='encoder_decoder',
      vocab_size=16,
      d_model=16,
      num_heads=4,
      num_layers=1,
      d_ff=16,
      encoder_position='t5',
      decoder_position='shaw',
      shaw_max_distance=2,
      t5_num_buckets=8,
      t5_max_distance=16,
    ),
  )


def _batches():
  src = [np.array([5, 6, 7, 1]), np.array([8, 9, 1])]
  tgt = [np.array([2, 10, 11, 12]), np.array([2, 13, 14])]

  def packed(seqs):
    return (
      np.concatenate(seqs)[None],
      np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(seqs)])[None],
      np.concatenate([np.arange(len(s)) for s in seqs])[None],
    )

  (pi, ps, pp), (pt, pts, ptp) = packed(src), packed(tgt)
  pk = dict(
    inputs=pi,
    inputs_segment=ps,
    inputs_position=pp,
    decoder_inputs=pt,
    targets=np.roll(pt, -1, 1),
    targets_segment=pts,
    targets_position=ptp,
  )
  w = 6
  i = np.stack([np.pad(s, (0, w - len(s))) for s in src])
  t = np.stack([np.pad(s, (0, w - len(s))) for s in tgt])
  sep = dict(
    inputs=i,
    inputs_segment=(i > 0) * 1,
    inputs_position=np.tile(np.arange(w), (2, 1)),
    decoder_inputs=t,
    targets=np.roll(t, -1, 1),
    targets_segment=(t > 0) * 1,
    targets_position=np.tile(np.arange(w), (2, 1)),
  )
  as_jnp = lambda d: {k: jnp.asarray(v, jnp.int32) for k, v in d.items()}
  return as_jnp(pk), as_jnp(sep)


def _outputs(cfg, numeric):
  m = model.build_model(cfg)
  packed, sep = _batches()

  def run(key):
    params = m.init(key, sep)
    out = {'packed': m.apply(params, packed), 'sep': m.apply(params, sep)}

    def loss_fn(p, batch):
      logits = m.apply(
        {'params': p}, batch, deterministic=False, rngs={'dropout': jax.random.key(1)}
      )
      logp = jax.nn.log_softmax(logits)
      nll = -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
      w = (batch['targets_segment'] > 0).astype(jnp.float32)
      return (nll * w).sum() / w.sum()

    for name, batch in (('packed', packed), ('sep', sep)):
      loss, grads = jax.value_and_grad(loss_fn)(params['params'], batch)
      out[f'loss_{name}'] = loss
      for path, g in jax.tree_util.tree_leaves_with_path(grads):
        out[f'grad_{name}{jax.tree_util.keystr(path)}'] = g
    encoded = m.apply(params, sep, method='encode')
    cache, steps = None, []
    for a, b in ((0, 2), (2, 3), (3, 4)):
      v = params if cache is None else {**params, 'cache': cache}
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
      cache = mut['cache']
      steps.append(lg)
    out['decode'] = jnp.concatenate(steps, axis=1)
    return out

  key = jax.random.key(0)
  jaxpr = str(jax.make_jaxpr(run)(key))
  fn = jax.jit(run, compiler_options=OPTS) if numeric else None
  out = {} if fn is None else {k: np.asarray(v) for k, v in fn(key).items()}
  out['jaxpr'] = np.asarray(jaxpr)
  return out


def collect():
  out = {}
  for name, cfg in _cases():
    for key, value in _outputs(cfg, name in NUMERIC).items():
      out[f'{name}/{key}'] = value
    print(name, flush=True)
  return out


def main(argv):
  global ALL
  ALL = '--all' in argv
  mode, path = argv[1], argv[2]
  got = collect()
  if mode == 'save':
    np.savez(path, **got)
    print(f'saved {len(got)} arrays to {path}')
    return 0
  want = dict(np.load(path))
  bad = sorted(k for k in want if k not in got or not np.array_equal(want[k], got[k]))
  extra = sorted(set(got) - set(want))
  print(f'{len(want)} arrays compared: {len(bad)} differ, {len(extra)} new')
  for k in bad[:20]:
    print('  DIFFERS:', k)
  return 1 if bad or extra else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))

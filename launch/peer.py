r"""attnlab side by side with the flax `examples/wmt` Transformer, in one process: a table of
ratios.

  python -m launch.peer --config=configs/multi30k.py:size=small --config.batch_size=32 \
      --config.data.packed_len=64 --repeats=2 --steps=12 --json=peer.json

The peer is another project's code and is never committed here. At run time the flax source
distribution of the installed flax version is fetched from the package registry
(`pip download --no-deps --no-binary :all: flax==X`), and only `examples/wmt/` is unpacked into the
build cache (`$ATTNLAB_BUILD_DIR/peer/flax-X/examples/wmt`, reused when present). From there:
- `models.py` and `decode.py` are imported as they are (they need only flax, jax and numpy);
- the step functions of its `train.py` (`train_step` with its label-smoothed cross-entropy and
  metrics, `initialize_cache`, `predict_step`, the rsqrt schedule, `TrainState`) are compiled from
  that file's own source, by name. `train.py` is not imported whole because its top level imports
  TensorFlow and clu for the input pipeline and logging, which the timed functions never touch.
  The imports that failed are listed in the JSON (`peer.missing_imports`); nothing is stubbed.
The glue (`launch/peer_model.py`) is built as `train_and_evaluate` builds it:
`TransformerConfig` (xavier kernels, shared embeddings, logits via the embedding),
`optax.adamw(b1=0.9, b2=0.98, eps=1e-9)`, state replicated,
`jax.pmap(train_step, axis_name='batch', donate_argnums=(0,))`, and for decoding
`pmap(initialize_cache)` + `pmap(predict_step, static_broadcasted_argnums=(3, 4))` per batch.

Both sides get the same model (dims, layers, vocabulary and dropout from the attnlab config), the
same batches (`launch.measure.real_batches` / `synthetic_batches`; the peer gets its own packed
keys), the same source sentences and the same beam. Differences that are the peer's own design and
stay: pre-LN, one `num_layers` for both stacks, shift-right with token 0 as BOS; and dtype follows
the attnlab config (train.py would pick float16 + dynamic loss scale on GPU).
Fixed-length decoding on both sides: attnlab's `measure.FixedLength` masks EOS until `--decode_len`;
the peer gets `eos_id=-1` (no token has that id, so no beam finishes early) and
`max_decode_len=decode_len + 1` (its loop writes max_decode_len - 1 tokens after the dummy 0): each
sentence is exactly `--decode_len` decoder steps on both sides.

Timing: attnlab through `launch.measure.measure_train` / `measure_decode`; the peer the same way
(batches on the device first, one warm-up call, total real target tokens / total step time; decode
median of `--decode_repeats` calls after a warm one). The sides alternate within each of
`--repeats` rounds (A B, then B A, ...) and the best round of each side is kept. Then, with
`--pairs` > 0, both sides are timed in pairs (`paired`): one train step of each on the same batch,
the order swapped every pair, then `--decode_pairs` pairs of decode calls; the median and quartiles
of the per-pair speed-ups go into a last column. On a host whose speed drifts, each side's best
round can fall in a different minute; a pair's two calls fall in the same seconds.

Greedy rows (`--greedy`): attnlab's greedy decoder against the peer's beam search with one beam,
the only way to decode greedily with the peer (its `predict_step` at `beam_size=1`: the same
tokens as greedy, with the beam search's bookkeeping, which is the peer's design).
"""

from __future__ import annotations

import datetime
import sys

import numpy as np

from absl import app, flags
from ml_collections import config_flags

import jax
from launch import measure
from launch import peer_model
from launch import peer_source
from launch import report_bench
from train import cli
from train import data
from train import layout
from train import metrics as metrics_lib
from train import runtime

FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'configs/NAME.py[:ARG]', lock_config=False)
  flags.DEFINE_integer(
    'repeats', 2, 'Rounds; each side is timed once per round, best round kept.', lower_bound=1
  )
  flags.DEFINE_integer('steps', 12, 'Timed train steps per side per round.', lower_bound=1)
  flags.DEFINE_enum(
    'data',
    'real',
    ['real', 'synthetic'],
    "Batches: the config's pipeline or random full rows (launch.benchmark).",
  )
  flags.DEFINE_integer(
    'synthetic_len', 16, 'Row length of synthetic batches and sources.', lower_bound=1
  )
  flags.DEFINE_integer('decode_batch', 32, 'Sentences per beam-search call.', lower_bound=1)
  flags.DEFINE_integer(
    'decode_len', 32, 'Tokens generated per sentence (EOS held back).', lower_bound=1
  )
  flags.DEFINE_integer('beam_size', 4, 'Beam width.', lower_bound=1)
  flags.DEFINE_integer(
    'decode_repeats',
    3,
    "Timed decode calls per round (median; 0: the first call's time, compile included).",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    'pairs',
    24,
    'After the rounds: train steps timed in pairs, one per side (0: none).',
    lower_bound=0,
  )
  flags.DEFINE_integer(
    'decode_pairs',
    24,
    'After the rounds: decode calls timed in pairs (8 were too few on a noisy host).',
    lower_bound=0,
  )
  flags.DEFINE_bool('batch1', True, 'Also time decoding of one sentence (latency).')
  flags.DEFINE_bool(
    'greedy', True, "Also time greedy decoding (the peer's side: its beam search, one beam)."
  )
  flags.DEFINE_string('flax_version', None, 'Peer version (default: the installed flax).')
  flags.DEFINE_string('peer_dir', None, 'Peer cache root (default: $ATTNLAB_BUILD_DIR/peer).')
  flags.DEFINE_string('json', None, 'Write the results here (atomically).')
  runtime.define_cpu_devices_flag()  # both sides run on the same devices


# ============================================================================= the run


def decodes_of(sources, args):
  """(name, method, beam width, inputs) of each decode measure: beam search over `sources`,
  then one sentence (`--batch1`), then greedy likewise (`--greedy`)."""
  one = {k: v[:1] for k, v in sources.items()}
  methods = [('beam', args['beam_size'])] + ([('greedy', 1)] if args.get('greedy') else [])
  sets = [('', sources)] + ([('_batch1', one)] if args['batch1'] else [])
  return [(m + suffix, m, width, inputs) for m, width in methods for suffix, inputs in sets]


def prepare(config, args):
  """(config with vocab_size resolved, train batches, host s/batch, decode sources, tokenizer)."""

  config = config.copy_and_resolve_references()
  tokenizer = None
  n = min(args['steps'], 20)
  if args['data'] == 'real':
    data.build(config)
    tokenizer = data.get_tokenizer(config)
    with config.unlocked():
      config.model.vocab_size = config.model.vocab_size or int(tokenizer.vocab_size)
    batches, host = measure.real_batches(config, tokenizer, n)
  else:
    with config.unlocked():
      config.model.vocab_size = config.model.vocab_size or config.data.vocab_size
    batches, host = measure.synthetic_batches(config, min(n, 4), args['synthetic_len'])
  sources = measure.decode_inputs(config, tokenizer, args['decode_batch'], args['synthetic_len'])
  return config, batches, host, sources


def best_of(rounds, decode_names):
  """Per side, the best round of each measure (max tokens/s, max sentences/s)."""
  return {
    side: {
      'train': max((x['train'] for x in rs), key=lambda t: t['tokens_per_s']),
      **{
        name: max((x[name] for x in rs), key=lambda d: d['sentences_per_s'])
        for name in decode_names
      },
    }
    for side, rs in rounds.items()
  }


def setup_of(config, batches, train, peer_params, sources):
  """What was compared: shapes, model settings and both parameter counts."""
  m = config.model
  return {
    'rows': int(batches[0]['targets'].shape[0]),
    'row_len': int(batches[0]['targets'].shape[1]),
    'vocab_size': int(m.vocab_size),
    'd_model': m.d_model,
    'layers': m.num_layers,
    'heads': m.num_heads,
    'd_ff': m.d_ff,
    'dropout': m.dropout,
    'attention_dropout': m.attention_dropout,
    'dtype': m.dtype,
    'params': {'attnlab': train['params'], 'flax_wmt': peer_params},
    'target_tokens_per_step': train['target_tokens_per_step'],
    'decode_sources': list(sources['inputs'].shape),
  }


def paired(config, batches, peer, decodes, args, log=print):
  """The two train steps alternated step by step (`measure.alternate`: A B, B A, ...; both sides
  run batch i in pair i), then each decode call likewise: per measure, the median and quartiles
  of the pairs' speed-ups (`measure.pair_ratios`) and each side's rate over its paired calls."""
  stepper = measure.TrainStepper(config, batches)
  n = args['pairs']
  ta, tb = measure.alternate(stepper.step, peer.step, n)
  tokens = sum(float(np.sum(batches[i % len(batches)]['weights'])) for i in range(n))
  out = {
    'train': {
      **measure.pair_ratios(ta, tb),
      'attnlab': tokens / sum(ta),
      'flax_wmt': tokens / sum(tb),
      'unit': 'real target tokens/s',
      'seconds': {'attnlab': ta, 'flax_wmt': tb},  # per pair, in pair order
    }
  }
  for name, method, width, inputs in decodes:
    ours = measure.decode_call(
      stepper.module, stepper.state.params, inputs, method, 'cached', args['decode_len'], width
    )
    theirs = lambda i, x=inputs['inputs'], w=width: peer.translate(x, w)
    ours(), theirs(0)  # compiled already in the rounds; warm again after the train steps
    da, db = measure.alternate(lambda i, f=ours: f(), theirs, max(args['decode_pairs'], 1))
    sentences = inputs['inputs'].shape[0] * len(da)
    out[name] = {
      **measure.pair_ratios(da, db),
      'attnlab': sentences / sum(da),
      'flax_wmt': sentences / sum(db),
      'unit': 'sentences/s',
      'seconds': {'attnlab': da, 'flax_wmt': db},
    }
  for name, p in out.items():
    log(
      f'[paired] {name}: attnlab {p["attnlab"]:,.1f} / flax_wmt {p["flax_wmt"]:,.1f} '
      f'{p["unit"]}, speed-up per pair {report_bench.format_ratio(p)} over {p["pairs"]} pairs'
    )
  return out


def run(config, args, wmt_dir=None, log=print):
  """Both sides, interleaved, as one JSON-able dict (with the Markdown table under 'table')."""
  jax.config.update('jax_enable_compilation_cache', False)
  wmt_dir = wmt_dir or peer_source.fetch_peer(args.get('flax_version'), args.get('peer_dir'))
  peer_ns = peer_source.load_peer(wmt_dir)
  config, batches, host, sources = prepare(config, args)
  info = measure.machine_info()
  peak = metrics_lib.peak_flops(info['device_kind'], config.model.dtype)
  ref = measure.MatmulReference('float32') if peak is None else None
  peer = peer_model.Peer(peer_ns, config, batches, args['decode_len'], args['beam_size'])
  decodes = decodes_of(sources, args)
  rounds = {'attnlab': [], 'flax_wmt': []}

  def attnlab_round():
    train, module, params = measure.measure_train(config, batches, host, args['steps'], ref)
    out = {'train': train}
    for name, method, width, inputs in decodes:
      out[name] = measure.measure_decode(
        module,
        params,
        inputs,
        [method],
        ['cached'],
        args['decode_len'],
        width,
        args['decode_repeats'],
      )[f'{method}_cached']
    return out

  def peer_round():
    out = {'train': peer.time_train(args['steps'], config.model, ref)}
    for name, _, width, inputs in decodes:
      out[name] = peer.time_decode(inputs['inputs'], args['decode_repeats'], width)
    return out

  for r in range(args['repeats']):
    order = [('attnlab', attnlab_round), ('flax_wmt', peer_round)]
    for side, fn in order if r % 2 == 0 else order[::-1]:
      rounds[side].append(fn())
      log(
        f'[round {r + 1}] {side}: {rounds[side][-1]["train"]["tokens_per_s"]:,.0f} tok/s, '
        f'beam {rounds[side][-1]["beam"]["sentences_per_s"]:.1f} sent/s'
      )
  if peak is not None:
    for side in rounds.values():
      for rnd in side:
        rnd['train'].setdefault('mfu', rnd['train']['flops_per_s'] / (peak * jax.device_count()))

  pairs = paired(config, batches, peer, decodes, args, log) if args.get('pairs') else None
  best = best_of(rounds, [name for name, *_ in decodes])
  rows = report_bench.peer_rows(decodes, peak)
  ratios = {}
  for label, part, key, _ in rows:
    a, b = best['attnlab'][part].get(key), best['flax_wmt'][part].get(key)
    ratios[f'{part}.{key}'] = a / b if a and b else None
  t = best['attnlab']['train']
  result = {
    'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
    'machine': info,
    'command': ' '.join(['python -m launch.peer'] + sys.argv[1:]),
    'args': args,
    'peak_flops_per_s': peak,
    'setup': setup_of(config, batches, t, peer.params_count, sources),
    'peer': {
      'source': wmt_dir,
      'missing_imports': peer_ns.missing_imports,
      'eos_id': peer_model.NO_EOS,
      'max_decode_len': peer.max_decode_len,
    },
    'rounds': rounds,
    'best': best,
    'paired': pairs,
    'ratios': ratios,
  }
  result['table'] = report_bench.peer_table(result, rows)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  args = {
    k: FLAGS[k].value
    for k in (
      'repeats',
      'steps',
      'data',
      'synthetic_len',
      'decode_batch',
      'decode_len',
      'beam_size',
      'decode_repeats',
      'pairs',
      'decode_pairs',
      'batch1',
      'greedy',
      'flax_version',
      'peer_dir',
    )
  }
  args['config'] = FLAGS['config'].config_filename
  try:
    args['cpu_devices'] = runtime.use_cpu_devices(FLAGS.cpu_devices, FLAGS.config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  result = run(FLAGS.config, args)
  if FLAGS.json:
    layout.write_json(FLAGS.json, result, default=repr)
  print(result['table'])


if __name__ == '__main__':
  cli.run(main, define_flags=define_flags, required=('config',), huge_pages=True)

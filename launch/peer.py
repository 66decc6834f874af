r"""attnlab side by side with the flax `examples/wmt` Transformer, in one process: a table of ratios.

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
The glue is built as `train_and_evaluate` builds it: `TransformerConfig` (xavier kernels, shared
embeddings, logits via the embedding), `optax.adamw(b1=0.9, b2=0.98, eps=1e-9)`, state replicated,
`jax.pmap(train_step, axis_name='batch', donate_argnums=(0,))`, and for decoding
`pmap(initialize_cache)` + `pmap(predict_step, static_broadcasted_argnums=(3, 4))` per batch.

Both sides get the same model (dims, layers, vocabulary and dropout from the attnlab config), the
same batches (`launch.benchmark.real_batches` / `synthetic_batches`; the peer gets its own packed
keys), the same source sentences and the same beam. Differences that are the peer's own design and
stay: pre-LN, one `num_layers` for both stacks, shift-right with token 0 as BOS; and dtype follows
the attnlab config (train.py would pick float16 + dynamic loss scale on GPU).
Fixed-length decoding on both sides: attnlab's `benchmark.FixedLength` masks EOS until `--decode_len`; the
peer gets `eos_id=-1` (no token has that id, so no beam finishes early) and
`max_decode_len=decode_len + 1` (its loop writes max_decode_len - 1 tokens after the dummy 0): each
sentence is exactly `--decode_len` decoder steps on both sides.

Timing: attnlab through `launch.benchmark.measure_train` / `measure_decode`; the peer the same way
(batches on the device first, one warm-up call, total real target tokens / total step time; decode
median of `--decode_repeats` calls after a warm one). The sides alternate within each of
`--repeats` rounds (A B, then B A, ...) and the best round of each side is kept. There is no greedy
row: the peer has beam search only.
"""

from __future__ import annotations

import ast
import datetime
import functools
import glob
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS

# train.py's top-level definitions that the timed path uses (compiled from its own source).
TRAIN_PY_NAMES = (
  'TrainState',
  'rsqrt_schedule',
  'create_learning_rate_schedule',
  'compute_weighted_cross_entropy',
  'compute_weighted_accuracy',
  'compute_metrics',
  'train_step',
  'initialize_cache',
  'predict_step',
  'pad_examples',
  'tohost',
)
# train.py's local imports: models/decode are the loaded modules; the others are not needed.
LOCAL_MODULES = ('bleu', 'decode', 'input_pipeline', 'models')
NO_EOS = -1  # an id no token has: the peer's beams never finish before max_decode_len


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'configs/NAME.py[:ARG]', lock_config=False)
  flags.DEFINE_integer('repeats', 2, 'Rounds; each side is timed once per round, best round kept.')
  flags.DEFINE_integer('steps', 12, 'Timed train steps per side per round.')
  flags.DEFINE_enum(
    'data',
    'real',
    ['real', 'synthetic'],
    "Batches: the config's pipeline or random full rows (launch.benchmark).",
  )
  flags.DEFINE_integer('synthetic_len', 16, 'Row length of synthetic batches and sources.')
  flags.DEFINE_integer('decode_batch', 32, 'Sentences per beam-search call.')
  flags.DEFINE_integer('decode_len', 32, 'Tokens generated per sentence (EOS held back).')
  flags.DEFINE_integer('beam_size', 4, 'Beam width.')
  flags.DEFINE_integer('decode_repeats', 3, 'Timed decode calls per round (median).')
  flags.DEFINE_bool('batch1', True, 'Also time beam search on one sentence (latency).')
  flags.DEFINE_string('flax_version', None, 'Peer version (default: the installed flax).')
  flags.DEFINE_string('peer_dir', None, 'Peer cache root (default: $ATTNLAB_BUILD_DIR/peer).')
  flags.DEFINE_string('json', None, 'Write the results here (atomically).')


class PeerUnavailable(RuntimeError):
  """The flax sdist could not be fetched or unpacked (offline, registry down, layout changed)."""


# ============================================================================= fetch + load


def default_peer_root():
  build = os.environ.get('ATTNLAB_BUILD_DIR') or os.path.join(os.getcwd(), '.cache', 'attnlab')
  return os.path.join(build, 'peer')


def fetch_peer(version=None, root=None, timeout=300):
  """Path of `examples/wmt` of flax `version`, downloading and unpacking it on first use."""
  import flax  # pylint: disable=import-outside-toplevel

  version = version or flax.__version__
  root = root or default_peer_root()
  dest = os.path.join(root, f'flax-{version}')
  wmt = os.path.join(dest, 'examples', 'wmt')
  if all(os.path.exists(os.path.join(wmt, f)) for f in ('models.py', 'decode.py', 'train.py')):
    return wmt
  os.makedirs(root, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=root, prefix='.fetch-') as tmp:
    cmd = [
      sys.executable,
      '-m',
      'pip',
      'download',
      '--no-deps',
      '--no-binary',
      ':all:',
      f'flax=={version}',
      '-d',
      tmp,
      '--quiet',
    ]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
      raise PeerUnavailable(f'`{" ".join(cmd)}` timed out after {timeout}s') from e
    archives = glob.glob(os.path.join(tmp, f'flax-{version}.tar.gz'))
    if proc.returncode or not archives:
      raise PeerUnavailable(
        f'`{" ".join(cmd)}` failed (rc {proc.returncode}): '
        f'{(proc.stderr or proc.stdout).strip()[-600:]}'
      )
    prefix = f'flax-{version}/examples/wmt/'
    stage = os.path.join(tmp, 'unpacked')
    with tarfile.open(archives[0]) as tar:
      members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
      if not members:
        raise PeerUnavailable(f'{os.path.basename(archives[0])} has no {prefix}')
      for m in members:  # only examples/wmt, at its path below flax-X/
        m.name = m.name[len(f'flax-{version}/') :]
      tar.extractall(stage, members=members, filter='data')
    os.makedirs(os.path.dirname(wmt), exist_ok=True)
    try:
      os.rename(os.path.join(stage, 'examples', 'wmt'), wmt)  # atomic: never half a directory
    except OSError:
      if not os.path.exists(os.path.join(wmt, 'train.py')):  # not a concurrent fetch that won
        raise
  return wmt


def _load_module(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_peer(wmt_dir):
  """Namespace with `models`, `decode` (imported from the sdist) and train.py's step functions."""
  models = _load_module('flax_wmt_models', os.path.join(wmt_dir, 'models.py'))
  decode = _load_module('flax_wmt_decode', os.path.join(wmt_dir, 'decode.py'))
  path = os.path.join(wmt_dir, 'train.py')
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), filename=path)
  ns = types.ModuleType('flax_wmt_train')
  ns.__dict__.update(models=models, decode=decode, __file__=path)
  missing = []
  for node in tree.body:  # train.py's own imports, one by one
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
      continue
    names = [a.name for a in node.names]
    if isinstance(node, ast.Import) and all(n in LOCAL_MODULES for n in names):
      continue
    try:
      exec(compile(ast.Module([node], []), path, 'exec'), ns.__dict__)  # pylint: disable=exec-used
    except ImportError as e:
      missing.append(f'{ast.unparse(node)}  ({type(e).__name__}: {e})')
  defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
  absent = [n for n in TRAIN_PY_NAMES if n not in defs]
  if absent:
    raise PeerUnavailable(f'{path} no longer defines {absent}: update launch/peer.py')
  exec(
    compile(ast.Module([defs[n] for n in TRAIN_PY_NAMES], []), path, 'exec'),  # pylint: disable=exec-used
    ns.__dict__,
  )
  ns.missing_imports = missing
  return ns


# ============================================================================= the peer


def peer_batch(batch):
  """attnlab's packed batch -> the keys the peer's train_step reads."""
  return {
    'inputs': batch['inputs'],
    'targets': batch['targets'],
    'inputs_position': batch['inputs_position'],
    'targets_position': batch['targets_position'],
    'inputs_segmentation': batch['inputs_segment'],
    'targets_segmentation': batch['targets_segment'],
  }


class Peer:
  """The flax examples/wmt Transformer, built as its train.py's `train_and_evaluate` builds it."""

  def __init__(self, peer, config, batches, decode_len, beam_size):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel
    from flax import jax_utils, linen as nn  # pylint: disable=import-outside-toplevel
    from flax.training import common_utils  # pylint: disable=import-outside-toplevel

    m = config.model
    enc = m.get('num_encoder_layers') or m.num_layers
    dec = m.get('num_decoder_layers') or m.num_layers
    if enc != dec or m.arch != 'encoder_decoder':
      raise ValueError(
        f'the peer has one num_layers for both stacks of an encoder-decoder; '
        f'got arch={m.arch}, {enc}+{dec} layers'
      )
    self.p, self.shard, self.tohost = peer, common_utils.shard, peer.tohost
    self.n_dev = jax.local_device_count()
    rows, length = batches[0]['targets'].shape
    self.max_decode_len = decode_len + 1
    self.train_config = peer.models.TransformerConfig(
      vocab_size=int(m.vocab_size),
      output_vocab_size=int(m.vocab_size),
      share_embeddings=True,
      logits_via_embedding=True,
      dtype=jnp.bfloat16 if m.dtype == 'bfloat16' else jnp.float32,
      emb_dim=m.d_model,
      num_heads=m.num_heads,
      num_layers=m.num_layers,
      qkv_dim=m.d_model,
      mlp_dim=m.d_ff,
      max_len=max(256, length, self.max_decode_len),
      dropout_rate=m.dropout,
      attention_dropout_rate=m.attention_dropout,
      deterministic=False,
      decode=False,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.normal(stddev=1e-6),
    )
    eval_config = self.train_config.replace(deterministic=True)
    predict_config = self.train_config.replace(deterministic=True, decode=True)
    rng, init_rng = jax.random.split(jax.random.key(config.seed))
    module = peer.models.Transformer(eval_config)
    variables = jax.jit(module.init)(
      init_rng, jnp.ones((rows, length), jnp.float32), jnp.ones((rows, length), jnp.float32)
    )
    lr_fn = peer.create_learning_rate_schedule(
      learning_rate=config.optim.learning_rate, warmup_steps=max(1, config.optim.warmup_steps)
    )
    state = peer.TrainState.create(
      apply_fn=module.apply,
      params=variables['params'],
      tx=optax.adamw(learning_rate=lr_fn, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0),
      dynamic_scale=None,
    )
    self.params_count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
    self.state = jax_utils.replicate(state)
    self.train_step = jax.pmap(
      functools.partial(
        peer.train_step,
        config=self.train_config,
        learning_rate_fn=lr_fn,
        label_smoothing=config.optim.label_smoothing,
      ),
      axis_name='batch',
      donate_argnums=(0,),
    )
    self.init_cache = jax.pmap(
      functools.partial(
        peer.initialize_cache, max_decode_len=self.max_decode_len, config=predict_config
      ),
      axis_name='batch',
    )
    self.pred_step = jax.pmap(
      functools.partial(peer.predict_step, config=predict_config, beam_size=beam_size),
      axis_name='batch',
      static_broadcasted_argnums=(3, 4),
    )
    self.dropout_rngs = jax.random.split(rng, self.n_dev)
    put = jax.pmap(lambda b: b)  # batches on the devices before timing, as attnlab's
    self.batches = batches
    self.device_batches = [
      put(self.shard(jax.tree_util.tree_map(np.asarray, peer_batch(b)))) for b in batches
    ]
    jax.block_until_ready(self.device_batches)
    t0 = time.perf_counter()
    # Two warm-up steps: the second compiles again, as the replicated state from
    # jax_utils.replicate and the one pmap returns are laid out differently (a one-time cost
    # in train.py's loop too, never a steady-state one).
    for i in range(2):
      self.state, metrics = self.train_step(
        self.state, self.device_batches[0], dropout_rng=self.dropout_rngs
      )
      jax.block_until_ready(metrics)
      if i == 0:
        self.compile_s = time.perf_counter() - t0

  def time_train(self, steps, model_cfg, ref=None):
    """Like benchmark.measure_train: total real target tokens / total step seconds."""
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from launch import benchmark  # pylint: disable=import-outside-toplevel

    times, cpu_times, rates = [], [], []
    for i in range(steps):
      b = self.device_batches[i % len(self.device_batches)]
      t0, c0 = time.perf_counter(), time.process_time()
      self.state, metrics = self.train_step(self.state, b, dropout_rng=self.dropout_rngs)
      jax.block_until_ready(metrics['loss'])
      times.append(time.perf_counter() - t0)
      cpu_times.append(time.process_time() - c0)
      if ref is not None:
        rates.append(ref.rate(0.25 * times[-1]))
    idx = [i % len(self.batches) for i in range(steps)]
    tokens = sum(float(np.sum(self.batches[i]['targets'] > 0)) for i in idx)
    useful = [benchmark.useful_flops(model_cfg, b) for b in self.batches]
    out = {
      'params': self.params_count,
      'compile_s': self.compile_s,
      'step_s': statistics.median(times),
      'tokens_per_s': tokens / sum(times),
      'flops_per_s': sum(useful[i] for i in idx) / sum(times),
      'loss_sum': float(np.asarray(metrics['loss']).sum()),
    }
    if rates:
      wall, cpu = zip(*rates)
      out['mfu'] = statistics.median(useful[i] / t / r for i, t, r in zip(idx, times, wall))
      out['cpu_time_mfu'] = statistics.median(
        useful[i] / t / r for i, t, r in zip(idx, cpu_times, cpu)
      )
    return out

  def translate(self, inputs):
    """One call as train.py's translate loop makes it: pad to the devices, init cache, predict."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    x = np.asarray(inputs)
    n = x.shape[0]
    if n % self.n_dev:
      x = self.p.pad_examples(x, -(-n // self.n_dev) * self.n_dev)
    x = self.shard(x)
    cache = self.init_cache(x)
    out = self.pred_step(x, self.state.params, cache, NO_EOS, self.max_decode_len)
    return self.tohost(out)[:n]

  def time_decode(self, inputs, repeats):
    t0 = time.perf_counter()
    tokens = self.translate(inputs)  # compiles on the first round
    first = time.perf_counter() - t0
    self.translate(inputs)  # and any second compile (argument layouts)
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      self.translate(inputs)
      times.append(time.perf_counter() - t0)
    sec = statistics.median(times) if times else first
    n = tokens.shape[0]
    return {
      'seconds': sec,
      'compile_s': max(first - sec, 0.0),
      'sentences_per_s': n / sec,
      'tokens_per_sentence': self.max_decode_len - 1,
      'tokens_per_s': n * (self.max_decode_len - 1) / sec,
    }


# ============================================================================= the run


def prepare(config, args):
  """(config with vocab_size resolved, train batches, host s/batch, decode sources, tokenizer)."""
  from launch import benchmark  # pylint: disable=import-outside-toplevel

  config = config.copy_and_resolve_references()
  tokenizer = None
  n = min(args['steps'], 20)
  if args['data'] == 'real':
    from train import data  # pylint: disable=import-outside-toplevel

    data.build(config)
    tokenizer = data.get_tokenizer(config)
    with config.unlocked():
      config.model.vocab_size = config.model.vocab_size or int(tokenizer.vocab_size)
    batches, host = benchmark.real_batches(config, tokenizer, n)
  else:
    with config.unlocked():
      config.model.vocab_size = config.model.vocab_size or config.data.vocab_size
    batches, host = benchmark.synthetic_batches(config, min(n, 4), args['synthetic_len'])
  sources = benchmark.decode_inputs(config, tokenizer, args['decode_batch'], args['synthetic_len'])
  return config, batches, host, sources


def run(config, args, wmt_dir=None, log=print):
  """Both sides, interleaved, as one JSON-able dict (with the Markdown table under 'table')."""
  import jax  # pylint: disable=import-outside-toplevel
  from launch import benchmark  # pylint: disable=import-outside-toplevel
  from train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel

  jax.config.update('jax_enable_compilation_cache', False)
  wmt_dir = wmt_dir or fetch_peer(args.get('flax_version'), args.get('peer_dir'))
  peer_ns = load_peer(wmt_dir)
  config, batches, host, sources = prepare(config, args)
  info = benchmark.machine_info()
  peak = metrics_lib.peak_flops(info['device_kind'], config.model.dtype)
  ref = benchmark.MatmulReference('float32') if peak is None else None
  peer = Peer(peer_ns, config, batches, args['decode_len'], args['beam_size'])
  one = {k: v[:1] for k, v in sources.items()}
  decodes = [('beam', sources)] + ([('beam_batch1', one)] if args['batch1'] else [])
  rounds = {'attnlab': [], 'flax_wmt': []}

  def attnlab_round():
    train, module, params = benchmark.measure_train(config, batches, host, args['steps'], ref)
    out = {'train': train}
    for name, inputs in decodes:
      out[name] = benchmark.measure_decode(
        module,
        params,
        inputs,
        ['beam'],
        ['cached'],
        args['decode_len'],
        args['beam_size'],
        args['decode_repeats'],
      )['beam_cached']
    return out

  def peer_round():
    out = {'train': peer.time_train(args['steps'], config.model, ref)}
    for name, inputs in decodes:
      out[name] = peer.time_decode(inputs['inputs'], args['decode_repeats'])
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

  best = {
    side: {
      'train': max((x['train'] for x in rs), key=lambda t: t['tokens_per_s']),
      **{
        name: max((x[name] for x in rs), key=lambda d: d['sentences_per_s']) for name, _ in decodes
      },
    }
    for side, rs in rounds.items()
  }
  rows = [
    ('train, real target tokens/s', 'train', 'tokens_per_s', ',.0f'),
    (
      'train MFU' + (' (CPU time, vs a float32 matmul)' if peak is None else ''),
      'train',
      'cpu_time_mfu' if peak is None else 'mfu',
      '.1%',
    ),
    (
      f'beam-{args["beam_size"]} decode, {args["decode_batch"]} sentences, sentences/s',
      'beam',
      'sentences_per_s',
      ',.1f',
    ),
  ]
  if args['batch1']:
    rows.append(
      (
        f'beam-{args["beam_size"]} decode, 1 sentence, sentences/s',
        'beam_batch1',
        'sentences_per_s',
        ',.1f',
      )
    )
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
    'setup': {
      'rows': int(batches[0]['targets'].shape[0]),
      'row_len': int(batches[0]['targets'].shape[1]),
      'vocab_size': int(config.model.vocab_size),
      'd_model': config.model.d_model,
      'layers': config.model.num_layers,
      'heads': config.model.num_heads,
      'd_ff': config.model.d_ff,
      'dropout': config.model.dropout,
      'attention_dropout': config.model.attention_dropout,
      'dtype': config.model.dtype,
      'params': {'attnlab': t['params'], 'flax_wmt': peer.params_count},
      'target_tokens_per_step': t['target_tokens_per_step'],
      'decode_sources': list(sources['inputs'].shape),
    },
    'peer': {
      'source': wmt_dir,
      'missing_imports': peer_ns.missing_imports,
      'eos_id': NO_EOS,
      'max_decode_len': peer.max_decode_len,
    },
    'rounds': rounds,
    'best': best,
    'ratios': ratios,
  }
  result['table'] = format_table(result, rows)
  return result


def format_table(result, rows):
  s = result['setup']
  lines = [
    f'{result["date"]} | {result["machine"]["description"]} | {s["rows"]} rows x '
    f'{s["row_len"]} tokens, vocab {s["vocab_size"]}, d {s["d_model"]}, {s["layers"]}+'
    f'{s["layers"]} layers, {s["heads"]} heads, FFN {s["d_ff"]}, {s["dtype"]} | params '
    f'attnlab {s["params"]["attnlab"] / 1e6:.2f}M, flax wmt '
    f'{s["params"]["flax_wmt"] / 1e6:.2f}M | best of {result["args"]["repeats"]} '
    'interleaved rounds',
    '',
    '| measure | attnlab | flax wmt | ratio |',
    '|---|---|---|---|',
  ]
  for label, part, key, spec in rows:
    a = result['best']['attnlab'][part].get(key)
    b = result['best']['flax_wmt'][part].get(key)
    ratio = result['ratios'][f'{part}.{key}']
    cell = lambda v: '-' if v is None else format(v, spec)
    lines.append(
      f'| {label} | {cell(a)} | {cell(b)} | {"-" if ratio is None else f"{ratio:.2f}x"} |'
    )
  return '\n'.join(lines)


def write_json_atomic(path, obj):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=1, default=repr)
  os.replace(tmp, path)


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
      'batch1',
      'flax_version',
      'peer_dir',
    )
  }
  args['config'] = FLAGS['config'].config_filename
  result = run(FLAGS.config, args)
  if FLAGS.json:
    write_json_atomic(FLAGS.json, result)
  print(result['table'])


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)

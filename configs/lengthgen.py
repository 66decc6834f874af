r"""Length generalisation: train on sequences up to `train_len`, test up to `test_len`.

Run:
  python -m train.main --config=configs/lengthgen.py:task=reverse,position=rotary \
      --workdir=workdirs/lengthgen_reverse_rotary
  python -m train.evaluate --workdir=workdirs/lengthgen_reverse_rotary --checkpoint=latest \
      --split=test

Tasks (train/data/lengthgen.py): copy, reverse, sort, duplicate, addition, addition_reversed
(numbers least significant digit first); one character per token. `arch=decoder_only` trains a
causal LM on `source <eos> target` (loss on the target only).

Measured (docs/studies.md, study 2; size=tiny, 1000 steps): on lengths <= train_len, copy, reverse
and sort reach 8-99% exact match depending on the scheme and architecture (position `none` and
decoder-only reverse are the lowest); addition (either format) is not learned at that size.
Beyond train_len, the results JSON's `exact_match_by_length` shows where each scheme breaks. In
the decoder-only model, ALiBi extrapolates copy best, and no positions at all extrapolates sort
best; the encoder-decoder model extrapolates neither copy nor reverse.
"""

from configs import common

# size -> (d_model, layers, heads, d_ff, batch, steps, warmup, peak lr)
SIZES = {
  'tiny': (64, 2, 4, 256, 64, 1500, 200, 2e-3),
  'small': (128, 3, 4, 512, 64, 4000, 400, 1e-3),
}
ARCHS = ('encoder_decoder', 'decoder_only')


def get_config(arg=None):
  """`arg`: task, train_len, test_len, arch, position, size (tiny | small)."""
  a = common.parse_arg(
    arg,
    task='copy',
    train_len=20,
    test_len=40,
    arch='encoder_decoder',
    position='sinusoidal',
    size='small',
  )
  if a.size not in SIZES:
    raise ValueError(f'size={a.size!r}; valid: {sorted(SIZES)}')
  if a.arch not in ARCHS:
    raise ValueError(f'arch={a.arch!r}; valid: {ARCHS}')
  d, layers, heads, d_ff, batch, steps, warmup, lr = SIZES[a.size]

  c = common.base_config()
  c.total_steps = steps  # optimizer steps
  c.batch_size = batch  # sequences per step
  c.checkpoint_every = 500  # async save interval
  c.eval_every = 1000  # validation loss + exact match on a subset
  c.log_every = 100  # console / TensorBoard interval

  c.data.name = 'lengthgen'  # synthetic, generated deterministically
  c.data.task = a.task  # copy | reverse | sort | duplicate | addition[_reversed]
  c.data.train_max_len = a.train_len  # training and validation lengths are 1..train_len
  c.data.test_max_len = a.test_len  # test lengths are 1..test_len (evenly)
  c.data.num_train = 20000  # training examples (cycled for `steps`)
  c.data.num_eval = 1000  # validation / test examples
  c.data.tokenizer = 'char'  # one symbol = one token
  longest = 2 * a.test_len + 2  # addition has 2 operands, duplicate doubles the target
  c.data.max_src_len = longest  # nothing in any split is cut
  c.data.max_tgt_len = longest
  c.data.bucket_boundaries = tuple(b for b in (16, 32, 48, 64, 96, 128, 192) if b < longest)
  c.data.eval_splits = ('validation', 'test')  # first = validation during training

  c.model.arch = a.arch  # encoder_decoder | decoder_only
  c.model.position = a.position  # the scheme under study
  c.model.d_model = d  # width
  c.model.num_layers = layers  # per stack
  c.model.num_heads = heads  # attention heads
  c.model.d_ff = d_ff  # FFN width
  c.model.dropout = 0.0  # synthetic data: no overfitting to fight
  c.model.max_len = 4 * longest  # learned table covers decoder-only decode caches (prompt + output)
  c.model.t5_max_distance = 128  # T5 buckets up to this distance
  c.model.share_embeddings = True  # one char vocabulary for both sides

  c.optim.schedule = 'cosine'  # anneal to 0: cleaner end-of-run accuracy
  c.optim.learning_rate = lr  # peak
  c.optim.warmup_steps = warmup  # linear warmup
  c.optim.label_smoothing = 0.0  # exact-match tasks: no smoothing

  c.eval.decode = 'greedy'  # exact match needs no beam
  c.eval.bleu_sentences = 200  # validation examples decoded for exact match
  c.eval.max_len_margin = a.test_len + 2  # targets can be twice the source (duplicate)
  return c


# Plain data (configs import no code): model/positions.py SCHEMES in its order; a test
# (tests/train/test_configs.py) fails when they differ.
SCHEMES = ('none', 'sinusoidal', 'learned', 'shaw', 't5', 't5_unscaled', 'rotary', 'alibi')
TASKS = ('copy', 'reverse', 'sort', 'addition')
# Two runs small enough to finish in a few minutes on a 2-core CPU: checks an install end to end.
SMOKE = {
  'total_steps': 60,
  'batch_size': 32,
  'checkpoint_every': 30,
  'eval_every': 30,
  'log_every': 10,
  'data.num_train': 512,
  'data.num_eval': 80,
  'model.d_model': 32,
  'model.num_layers': 1,
  'model.d_ff': 64,
  'optim.warmup_steps': 10,
  'eval.bleu_sentences': 40,
}


def sweep(name):
  """`smoke`; `positions`: schemes on this task; `archs`: schemes x archs; `study`: x tasks too;
  `addition_reversed`: schemes x archs on digit-reversed addition (study 2's follow-up)."""
  if name == 'smoke':
    return [{**SMOKE, 'model.position': p} for p in ('sinusoidal', 'rotary')]
  if name == 'positions':
    return [{'model.position': p} for p in SCHEMES]
  if name == 'archs':
    return [{'model.position': p, 'model.arch': a} for a in ARCHS for p in SCHEMES]
  if name == 'study':  # study 2: 4 tasks x 2 archs x 8 schemes = 64 runs
    return [
      {'data.task': t, 'model.arch': a, 'model.position': p}
      for t in TASKS
      for a in ARCHS
      for p in SCHEMES
    ]
  if name == 'addition_reversed':  # 2 archs x every scheme (8 today: 16 runs)
    return [
      {'data.task': 'addition_reversed', 'model.arch': a, 'model.position': p}
      for a in ARCHS
      for p in SCHEMES
    ]
  raise ValueError(
    f'unknown sweep {name!r}; valid: smoke, positions, archs, study, addition_reversed'
  )

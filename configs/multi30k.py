r"""Multi30K translation (en->de by default) with a small Transformer; CPU-friendly.

Run (from the repository root; `make train` does exactly this with the default arg):

  python -m train.data.prepare --config=configs/multi30k.py
  python -m train.main --config=configs/multi30k.py --workdir=workdirs/multi30k_default
  python -m train.evaluate --workdir=workdirs/multi30k_default --checkpoint=latest \
      --split=test_2016_flickr --show=5

Variants via the arg string, e.g. `configs/multi30k.py:size=small,position=rotary,src=en,tgt=fr`,
and any key via flags, e.g. `--config.model.attention=shared_qk --config.total_steps=500`.

Expected results and cost (2-core CPU, measured while ~15 other processes shared it; the
per-CPU-second figures are the ones that carry over to an idle machine):
  size=tiny / default  d 128, 2+2 layers, 1.4M params, packed 32 x 64-token rows per step:
                       ~1.3 CPU-s per step, ~1,600 target tokens and ~14 GFLOP per CPU-second.
                       default (1,400 steps, `make train`) is sized for < 10 min on an idle 2-core
                       machine; tiny (300 steps) for ~4 min. Train loss reaches ~3.0 by step 300.
                       2026-12-02, 1,400 steps, no dropout, 2 CPU devices: test_2016_flickr
                       BLEU 31.28 (literature BLEU 31.62; beam 4), val BLEU 31.40; unrolled
                       layers, 2026-12-04: 31.88 (32.25) in 4 min 40 s end to end (800 steps:
                       28.00 / 27.70; 700 steps with dropout 0.1, 2026-11-22: 22.85).
  size=small  d 256, 3+3 layers, 7.6M params: ~4 CPU-s per step, ~510 target tokens and
              ~24 GFLOP per CPU-second; 6000 steps is an hours-long CPU run (GPU: minutes).
  size=base   the paper's base model: an accelerator job; published small-model results on
              this data are ~38-41 BLEU (test_2016_flickr, en->de).

The literature's setup (lowercased, normalised, Moses-tokenized text, `data.preprocess=lc_norm_tok`,
scored as `bleu_lit`: BLEU over those tokens, as multi-bleu.perl; sacreBLEU's cased `bleu` of such a
model is meaningless, its output is lowercase):
  size=wu2021  the published Transformer-Tiny recipe (Wu et al. 2021: 4+4 layers, d 128, 4 heads,
               FFN 256, dropout 0.3, peak lr 5e-3 after 2,000 warmup updates, ~8k target tokens
               per update, <= 8,000 updates with patience (here 5 validations 400 updates
               apart), 10k joint vocabulary, beam 5; the paper reports 41.02 on
               test_2016_flickr with the mean of the last 10 checkpoints):
                 python -m train.main --config=configs/multi30k.py:size=wu2021 --workdir=runs/wu2021
                 python -m train.evaluate --workdir=runs/wu2021 --checkpoint=avg_last:10 \
                     --split=test_2016_flickr
               measured 2026-12-04 (2 CPU devices, hash dropout, unrolled layers, fused output
               head + loss): 8,000 updates (patience never fired) in 2 h 49 min of training,
               about 5.1 CPU-hours (1.1-1.3 s and 2.3 CPU-s per update; 2.55 s per update on
               the 2026-12-01 code path); test_2016_flickr literature BLEU 41.32 (mean of the
               last 10 checkpoints; latest 41.26; paper 41.02), test_2017_flickr 34.30 (latest
               33.20).
  size=budget  the same model on a CPU schedule of at most 60 minutes (5,400 updates of ~3.8k
               target tokens, cosine from 3e-3 after 400 warmup updates, dropout 0.2; ~54 epochs):
                 python -m train.main --config=configs/multi30k.py:size=budget --workdir=runs/budget
                 python -m train.evaluate --workdir=runs/budget --checkpoint=latest \
                     --split=test_2016_flickr
               measured 2026-12-04 on the idle 2-core machine: 55 min 11 s wall end to end (105
               CPU-minutes), test_2016_flickr literature BLEU 40.85 (beam 5, latest; the mean of
               the last 10 checkpoints 40.91), test_2017_flickr 32.76 (mean of the last 10: 32.46).
               Earlier: 3,600 updates (2026-12-04): 39.97 in 35 min 39 s; 2,600 updates
               (2026-12-02, before the fused head + loss): 38.28 in 63-75 min; 2,000 updates
               (2026-12-01): 35.58 in 69 min (mean of the last 5 / 10 checkpoints 35.35 / 34.77:
               no gain after a cosine decay).
"""

from configs import common

# size -> (d_model, layers per stack, heads, d_ff, vocab, packed rows, steps, warmup, peak lr,
#          schedule). tiny/default share one architecture (and tokenizer); default trains longer.
# Short CPU runs anneal with cosine: ending at lr 0 is worth a few BLEU over rsqrt's long tail.
SIZES = {
  'tiny': (128, 2, 4, 512, 4000, 32, 300, 60, 2e-3, 'cosine'),
  'default': (128, 2, 4, 512, 4000, 32, 1400, 100, 2e-3, 'cosine'),
  'small': (256, 3, 4, 1024, 8000, 64, 6000, 600, 1e-3, 'rsqrt'),
  'base': (512, 6, 8, 2048, 16000, 128, 30000, 4000, 7e-4, 'rsqrt'),
  # Wu et al. 2021 (ACL), "Transformer-Tiny": the published text-only recipe on this data.
  'wu2021': (128, 4, 4, 256, 10000, 128, 8000, 2000, 5e-3, 'rsqrt'),
  # The same model with a schedule that fits 60 minutes of training on the 2-core CPU.
  'budget': (128, 4, 4, 256, 10000, 64, 5400, 400, 3e-3, 'cosine'),
}

# Settings beyond the size tuple, per size (dotted config keys).
RECIPES = {
  'default': {
    'model.dropout': 0.0,  # ~2 epochs: nothing to regularise yet, so no dropout
  },
  'small': {
    # fused output head + loss: 0.95-0.99x the step time of the [B, T, V] logits
    # (docs/performance.md)
    'loss_chunk_tokens': 1024,
  },
  'wu2021': {
    'data.preprocess': 'lc_norm_tok',  # the paper trains and scores on the official tok files
    'model.dropout': 0.3,  # paper
    # fused output head + loss: ~0.7x the CPU time per token (docs/performance.md)
    'loss_chunk_tokens': 1024,
    'checkpoint_every': 100,  # ~2 epochs (8k target tokens per update, ~50 per epoch)
    'keep_checkpoints': 10,  # the paper averages the last 10
    'eval_every': 400,  # validation loss + greedy BLEU (500 val sentences, ~40 s each)
    'patience': 5,  # stop after 5 validations (2,000 updates) without gain
    'eval.beam_size': 5,  # paper
  },
  'budget': {
    'data.preprocess': 'lc_norm_tok',
    'model.dropout': 0.2,  # ~20 epochs, not 160: less regularisation than the paper
    'loss_chunk_tokens': 1024,
    'checkpoint_every': 100,
    'keep_checkpoints': 10,
    'eval_every': 900,  # 4 validations: each greedy pass over 500 sentences costs ~15-40 s
    'eval.beam_size': 5,
  },
}


def get_config(arg=None):
  """`arg`: size=tiny|default|small|base|wu2021|budget, position=..., src=en, tgt=de|fr|cs."""
  a = common.parse_arg(arg, size='default', position='sinusoidal', src='en', tgt='de')
  if a.size not in SIZES:
    raise ValueError(f'size={a.size!r}; valid: {sorted(SIZES)}')
  d, layers, heads, d_ff, vocab, batch, steps, warmup, lr, schedule = SIZES[a.size]

  c = common.base_config()
  c.total_steps = steps  # optimizer steps
  c.batch_size = batch  # packed rows of 64 tokens (~3 caption pairs each) per step
  c.checkpoint_every = 200 if steps < 2000 else 1000  # async save interval
  c.eval_every = steps if steps < 2000 else steps // 6  # validation loss + BLEU on a subset
  c.log_every = 25 if steps < 2000 else 100  # console / TensorBoard interval

  c.data.name = 'multi30k'  # Flickr caption translation
  c.data.src = a.src  # source language
  c.data.tgt = a.tgt  # target language (de, fr; cs lacks test_2017)
  c.data.tokenizer = 'unigram'  # joint sentencepiece unigram model
  c.data.vocab_size = vocab  # small corpus -> small vocabulary
  c.data.max_src_len = 64  # captions are short: this drops almost nothing
  c.data.max_tgt_len = 64  # same for targets
  c.data.batching = 'pack'  # one compiled shape and no padding (CPU compiles are slow)
  c.data.packed_len = 64  # tokens per packed row (source and target sides)
  c.data.bucket_boundaries = (16, 24, 32, 48, 64)  # padded lengths if batching = bucket
  c.data.eval_splits = ('val', 'test_2016_flickr')  # first = validation during training

  c.model.arch = 'encoder_decoder'  # the paper's model
  c.model.d_model = d  # width
  c.model.num_layers = layers  # layers in each stack
  c.model.num_heads = heads  # attention heads
  c.model.d_ff = d_ff  # FFN width (4 x d_model)
  c.model.dropout = 0.1  # residual dropout (paper: 0.1)
  c.model.position = a.position  # every self-attention's position scheme
  # counter-hash keep bits: ~6% less CPU time per token (docs/performance.md)
  c.model.dropout_mask = 'hash'
  # Unrolled layers on the CPU sizes: 0.93-0.95x the CPU time per token of nn.scan at d 128 and
  # d 256, 0.82-0.85x for the recipes' 4+4 layers (docs/performance.md); base, an accelerator
  # job, keeps nn.scan (compile time flat in depth).
  c.model.scan_layers = a.size == 'base'

  c.optim.schedule = schedule  # rsqrt = the paper's; cosine for the short CPU runs
  c.optim.learning_rate = lr  # peak, reached after warmup
  c.optim.warmup_steps = warmup  # linear warmup
  c.optim.label_smoothing = 0.1  # paper

  c.eval.decode = 'beam'  # beam search for BLEU
  c.eval.beam_size = 4  # paper
  c.eval.alpha = 0.6  # paper
  c.eval.bleu_sentences = 200 if a.size in ('tiny', 'default') else 500  # val subset for BLEU
  for key, value in RECIPES.get(a.size, {}).items():
    node = c
    *parents, leaf = key.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  return c


# Plain data (configs import no code): the position schemes and attention kinds of
# model/positions.py SCHEMES and model/attention.py KINDS, in their order. A test
# (tests/train/test_configs.py) fails when these differ from the registries.
SCHEMES = ('none', 'sinusoidal', 'learned', 'shaw', 't5', 't5_unscaled', 'rotary', 'alibi')
ATTENTIONS = ('dot', 'additive', 'shared_qk', 'linear', 'lightconv', 'dynamicconv')
SEEDS = (0, 1, 2)
# Two runs small enough to finish in a few minutes on a 2-core CPU: checks an install end to end.
SMOKE = {
  'total_steps': 40,
  'batch_size': 32,
  'checkpoint_every': 20,
  'eval_every': 20,
  'log_every': 10,
  'model.d_model': 32,
  'model.num_heads': 2,
  'model.num_layers': 1,
  'model.d_ff': 64,
  'optim.warmup_steps': 10,
  'eval.decode': 'greedy',
  'eval.bleu_sentences': 32,
  'eval.loss_sentences': 128,
  'eval.max_len_margin': 10,
}


def sweep(name):
  """Named sweeps for launch.sweep: smoke, positions (study 1), attention (study 3), heads."""
  if name == 'smoke':
    return [{**SMOKE, 'model.position': p} for p in ('sinusoidal', 'rotary')]
  # Seed-major order: a study stopped part-way has every setting with the same number of seeds.
  if name == 'positions':  # study 1: 8 schemes x 3 seeds
    return [{'model.position': p, 'seed': s} for s in SEEDS for p in SCHEMES]
  if name == 'attention':  # study 3: scoring, shared QK, convolutions at 4 heads; 1 and 8 dot heads
    settings = [{'model.attention': a, 'model.num_heads': 4} for a in ATTENTIONS]
    for o in settings:  # kernel widths 3, 7 differ per layer: nn.scan cannot stack them (explicit,
      if o['model.attention'].endswith('conv'):  # though unrolled is the default: same run names)
        o['model.scan_layers'] = False
    settings += [{'model.attention': 'dot', 'model.num_heads': h} for h in (1, 8)]
    return [{**o, 'seed': s} for s in SEEDS for o in settings]
  if name == 'heads':  # multi-query / grouped-query attention
    return [{'model.num_kv_heads': k} for k in (1, 2, 4)]
  raise ValueError(f'unknown sweep {name!r}; valid: smoke, positions, attention, heads')

r"""WMT14 English-German with the paper's base / big Transformer (Vaswani et al. 2017, Table 3).

For accelerators. The data is not bundled: lay out your own sentence-aligned, gzipped files as
  $DIR/multi30k/train.en.gz train.de.gz val.en.gz val.de.gz newstest2014.en.gz newstest2014.de.gz
(val = newstest2013; `multi30k/` is the generic parallel-text builder's folder name) and pass
`--config.data.data_dir=$DIR`. Then, on one 8-GPU host or a TPU slice:

  python -m train.data.prepare --config=configs/wmt14.py:size=base --config.data.data_dir=$DIR
  python -m train.main --config=configs/wmt14.py:size=base --workdir=workdirs/wmt14_base \
      --config.data.data_dir=$DIR
  python -m train.evaluate --workdir=workdirs/wmt14_base --checkpoint=avg_last:5 \
      --split=newstest2014

Multi-host: prefix the train.main line with `python -m launch.multihost --`.
Expected (paper, newstest2014, the mean of the last 5 checkpoints, as `avg_last:5` does): base
27.3 BLEU after 100k steps (12 h on 8 P100); big 28.4 after 300k steps. Expect ~1 BLEU less from
a single checkpoint (`--checkpoint=best`), and note the paper's BLEU is tokenized (ours is
sacreBLEU's, typically lower).
"""

from configs import common

# size -> (d_model, heads, d_ff, dropout, steps, peak lr = (d_model * warmup)^-0.5)
SIZES = {
  'base': (512, 8, 2048, 0.1, 100_000, (512 * 4000) ** -0.5),
  'big': (1024, 16, 4096, 0.3, 300_000, (1024 * 4000) ** -0.5),
}


def get_config(arg=None):
  """`arg`: size=base|big, position=..., src=en, tgt=de, dtype=bfloat16|float32."""
  a = common.parse_arg(
    arg, size='base', position='sinusoidal', src='en', tgt='de', dtype='bfloat16'
  )
  if a.size not in SIZES:
    raise ValueError(f'size={a.size!r}; valid: {sorted(SIZES)}')
  d, heads, d_ff, dropout, steps, lr = SIZES[a.size]

  c = common.base_config()
  c.total_steps = steps  # paper: 100k (base) / 300k (big)
  c.batch_size = 96  # packed rows of 256: ~25k target tokens (paper)
  c.checkpoint_every = 2000  # async save interval
  c.eval_every = 5000  # validation loss + BLEU on 500 sentences
  c.log_every = 100  # console / TensorBoard interval
  c.keep_checkpoints = 5  # the paper averaged the last 5: --checkpoint=avg_last:5

  c.data.name = 'multi30k'  # the generic `{split}.{lang}.gz` parallel-text builder
  c.data.src = a.src  # source language
  c.data.tgt = a.tgt  # target language
  c.data.data_dir = None  # REQUIRED: your WMT14 files (see docstring)
  c.data.tokenizer = 'bpe'  # paper: shared byte-pair encoding
  c.data.vocab_size = 37000  # paper: ~37k shared tokens
  c.data.joint_vocab = True  # shared source/target vocabulary
  c.data.max_src_len = 256  # longer pairs are dropped (length_policy=filter)
  c.data.max_tgt_len = 256
  c.data.length_policy = 'filter'  # drop, do not cut, overlong training pairs
  c.data.batching = 'pack'  # one compiled shape, almost no padding
  c.data.packed_len = 256  # tokens per packed row
  c.data.worker_count = 4  # grain worker processes for tokenization
  c.data.eval_splits = ('val', 'newstest2014')  # first = validation during training

  c.model.arch = 'encoder_decoder'  # the paper's model
  c.model.d_model = d  # 512 base / 1024 big
  c.model.num_layers = 6  # per stack (paper N = 6)
  c.model.num_heads = heads  # 8 base / 16 big
  c.model.d_ff = d_ff  # 2048 base / 4096 big
  c.model.dropout = dropout  # P_drop: 0.1 base / 0.3 big (EN-DE)
  c.model.position = a.position  # paper: sinusoidal
  c.model.norm = 'post'  # paper: post-LN
  c.model.max_len = 512  # learned-position table (if position=learned)
  c.model.share_embeddings = True  # paper: shared embeddings and pre-softmax weights
  c.model.tie_output = True
  c.model.scale_embeddings = True  # paper: embeddings x sqrt(d_model)
  c.model.dtype = a.dtype  # bfloat16 activations on accelerators
  c.model.remat = 'none' if a.size == 'base' else 'dots'  # big: recompute non-matmul activations

  c.optim.schedule = 'rsqrt'  # paper's schedule
  c.optim.learning_rate = lr  # peak = d_model^-0.5 * warmup^-0.5
  c.optim.warmup_steps = 4000  # paper
  c.optim.label_smoothing = 0.1  # paper
  c.optim.clip_norm = 0.0  # the paper does not clip

  c.mesh.data = -1  # all devices data-parallel ...
  c.mesh.fsdp = 1  # ... raise for big models on many chips (ZeRO-3)
  c.mesh.tensor = 1  # tensor parallelism (heads / mlp) if needed

  c.eval.decode = 'beam'  # paper: beam 4, alpha 0.6, max len = source + 50
  c.eval.beam_size = 4
  c.eval.alpha = 0.6
  c.eval.max_len_margin = 50
  c.eval.bleu_sentences = 500  # validation subset decoded during training
  c.eval.batch_size = 128
  return c

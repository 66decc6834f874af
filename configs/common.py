"""Shared pieces of every config: the full key set with defaults, `arg` parsing, mesh rules,
and `opt`, through which code reads a key of a possibly partial config (base_config's default).

Plain data only: nothing here imports the project's code, so a config can be read, printed
and diffed without JAX. The key names are fixed by docs/contracts.md.
"""

import ml_collections as mlc


def parse_arg(arg, **defaults):
  """`"size=tiny,position=rotary"` -> ConfigDict over `defaults` (values cast to their type).

  An unknown key raises ValueError listing the known ones, so a typo never silently does nothing.
  """
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep:
      raise ValueError(f'config arg {item!r} is not key=value (e.g. "size=tiny")')
    if key not in defaults:
      raise ValueError(f'unknown config arg {key!r}; known: {sorted(defaults)}')
    default = defaults[key]
    if isinstance(default, bool):
      value = value.strip().lower() in ('1', 'true', 'yes', 'y')
    elif isinstance(default, int):
      value = int(value)
    elif isinstance(default, float):
      value = float(value)
    out[key] = value.strip() if isinstance(value, str) else value
  return mlc.ConfigDict(out)


# Logical axis -> mesh axis. Batch splits over data and fsdp; weights shard their widest axis
# over fsdp (ZeRO-3 style) and the per-head / hidden axes over tensor (Megatron style).
MESH_RULES = (
  ('batch', ('data', 'fsdp')),
  ('length', None),
  ('vocab', 'tensor'),
  ('embed', 'fsdp'),
  ('heads', 'tensor'),
  ('kv', None),
  ('mlp', 'tensor'),
  ('layers', None),
  ('relpos', None),
)


def base_config():
  """Every key the code reads, with its default. Task configs override what differs."""
  c = mlc.ConfigDict()
  c.seed = 0  # params init, dropout and data order all derive from it
  c.dropout_rng_impl = (
    'threefry2x32'  # threefry2x32 (sharding-invariant; fastest on CPU) | rbg | unsafe_rbg
  )
  c.total_steps = 1000  # optimizer steps (each may accumulate several micro-batches)
  c.batch_size = 64  # global batch, in sequences (or packed rows)
  c.checkpoint_every = 500  # async Orbax save interval, steps
  c.eval_every = 500  # validation loss (+ BLEU) interval, steps; 0 = only at the end
  c.log_every = 50  # console line + TensorBoard scalars interval, steps
  c.keep_checkpoints = 2  # newest checkpoints kept (the best-by-metric one is kept too);
  #   checkpoint averaging (train.evaluate --checkpoint=avg_last:10) needs >= 10 of them, saved
  #   every checkpoint_every steps (and at every eval_every): e.g. keep_checkpoints = 10
  c.patience = 0  # stop after N validations in a row without a better BLEU (else loss); 0 = off
  c.distributed = False  # call jax.distributed.initialize() (auto-detects SLURM / TPU)
  c.log_batch_hashes = False  # append each step's batch hash to WORKDIR/batches.txt (tests)
  c.loss_chunk_tokens = (
    0  # > 0: tied output projection + loss fused in chunks of ~this many tokens (no [B,T,V] logits)
  )

  c.data = mlc.ConfigDict()
  c.data.name = 'multi30k'  # multi30k | lengthgen | text
  c.data.src = 'en'  # source language (multi30k)
  c.data.tgt = 'de'  # target language (multi30k)
  c.data.task = 'copy'  # lengthgen task
  c.data.train_max_len = 20  # lengthgen: longest training sequence
  c.data.test_max_len = 40  # lengthgen: longest test sequence
  c.data.num_train = 20000  # lengthgen: training examples
  c.data.num_eval = 1000  # lengthgen: examples per evaluation split
  c.data.lengthgen_seed = 0  # lengthgen: generator seed (independent of c.seed)
  c.data.preprocess = 'raw'  # raw | lc_norm_tok (multi30k: lowercased, normalised, Moses-tokenized)
  c.data.tokenizer = 'unigram'  # unigram | bpe | char (sentencepiece model type)
  c.data.vocab_size = 8000  # tokenizer vocabulary size
  c.data.joint_vocab = True  # one vocabulary for source and target (allows tied embeddings)
  c.data.max_src_len = 64  # longest source in tokens (incl. eos)
  c.data.max_tgt_len = 64  # longest target in tokens (incl. eos)
  c.data.length_policy = 'filter'  # filter | truncate: what happens to longer training pairs
  c.data.batching = 'bucket'  # bucket (pad to length buckets) | pack (several pairs per row)
  c.data.packed_len = 128  # row length when batching = pack
  c.data.bucket_boundaries = (16, 24, 32, 48, 64)  # padded lengths when batching = bucket
  c.data.worker_count = 0  # grain worker processes (0 = in the main process)
  c.data.prefetch = 2  # batches built ahead in a background thread
  c.data.data_dir = mlc.config_dict.placeholder(str)  # raw corpora; None -> $ATTNLAB_DATA_DIR
  c.data.eval_splits = ('val',)  # the first one is the validation split used during training

  c.model = mlc.ConfigDict()
  c.model.arch = 'encoder_decoder'  # encoder_decoder | decoder_only | rnn
  c.model.vocab_size = 0  # 0 -> set from the tokenizer
  c.model.d_model = 256  # residual width
  c.model.num_heads = 4  # attention heads
  c.model.num_kv_heads = mlc.config_dict.placeholder(
    int
  )  # < num_heads: grouped / multi-query attention; None = num_heads
  c.model.num_layers = 3  # layers per stack
  c.model.num_encoder_layers = mlc.config_dict.placeholder(int)  # None -> num_layers
  c.model.num_decoder_layers = mlc.config_dict.placeholder(int)  # None -> num_layers
  c.model.d_ff = 1024  # feed-forward hidden width
  c.model.head_dim = mlc.config_dict.placeholder(int)  # None -> d_model // num_heads
  c.model.dropout = 0.1  # residual / embedding dropout
  c.model.attention_dropout = 0.0  # dropout on attention weights
  c.model.dropout_mask = 'bernoulli'  # bernoulli (flax, threefry bits) | hash (~15x cheaper on CPU)
  c.model.position = 'sinusoidal'  # none|sinusoidal|learned|shaw|t5|t5_unscaled|rotary|alibi
  c.model.encoder_position = mlc.config_dict.placeholder(str)  # None -> position
  c.model.decoder_position = mlc.config_dict.placeholder(str)  # None -> position
  c.model.max_len = 256  # learned position table size
  c.model.shaw_max_distance = 16  # Shaw et al. clipping distance
  c.model.t5_num_buckets = 32  # T5 relative buckets
  c.model.t5_max_distance = 128  # T5 largest bucketed distance
  c.model.attention = 'dot'  # dot | additive | shared_qk | linear | lightconv | dynamicconv
  c.model.conv_kernels = (3, 7, 15, 31, 31, 31, 31)  # lightconv/dynamicconv width per layer
  c.model.conv_weight_dropout = 0.1  # DropConnect on the convolution kernels (Wu et al. 2019)
  # cudnn: bf16, dot / shared_qk attention, no shaw positions
  c.model.attention_impl = 'auto'  # auto (= xla) | einsum | xla | cudnn
  c.model.ffn = 'relu'  # relu | gelu | swiglu
  c.model.norm = 'post'  # post (paper) | pre
  c.model.share_embeddings = True  # one embedding for source and target
  c.model.tie_output = True  # logits use the embedding matrix
  c.model.scale_embeddings = True  # multiply embeddings by sqrt(d_model) as in the paper
  c.model.scan_layers = True  # nn.scan over layers: compile time flat in depth
  c.model.remat = 'none'  # none | full | dots: activation recomputation
  c.model.dtype = 'float32'  # float32 | bfloat16 activations (params stay float32)
  c.model.rnn_cell = 'gru'  # gru | lstm (arch = rnn)
  c.model.rnn_hidden = 256  # rnn state width
  c.model.embed_init = mlc.config_dict.placeholder(
    str
  )  # word2vec workdir to initialise embeddings from

  c.optim = mlc.ConfigDict()
  c.optim.schedule = 'rsqrt'  # rsqrt (paper) | cosine | constant, all with linear warmup
  c.optim.learning_rate = 1e-3  # peak learning rate (reached at the end of warmup)
  c.optim.warmup_steps = 400  # linear warmup steps
  c.optim.b1 = 0.9  # Adam beta1 (paper)
  c.optim.b2 = 0.98  # Adam beta2 (paper)
  c.optim.eps = 1e-9  # Adam epsilon (paper)
  c.optim.weight_decay = 0.0  # decoupled weight decay on matrices (AdamW when > 0)
  c.optim.clip_norm = 1.0  # global gradient-norm clipping; 0 = off
  c.optim.grad_accum_steps = 1  # micro-batches per optimizer step (batch_size is the total)
  c.optim.label_smoothing = 0.1  # paper: 0.1

  c.mesh = mlc.ConfigDict()
  c.mesh.data = -1  # data-parallel axis; -1 = all devices left after fsdp x tensor
  c.mesh.fsdp = 1  # fully-sharded data-parallel axis
  c.mesh.tensor = 1  # tensor-parallel axis
  c.mesh_rules = MESH_RULES  # logical axis -> mesh axis (see above)

  c.eval = mlc.ConfigDict()
  c.eval.decode = 'beam'  # beam | greedy
  c.eval.beam_size = 4  # beam width
  c.eval.alpha = 0.6  # length penalty
  c.eval.max_len_margin = 50  # decode up to source length + margin
  c.eval.bleu_sentences = 200  # validation sentences decoded for BLEU during training; 0 = off
  c.eval.train_decode = (
    'greedy'  # decoding for that in-training BLEU (cheap); final eval uses `decode`
  )
  c.eval.batch_size = 64  # evaluation batch size
  c.eval.loss_sentences = 0  # validation sentences for loss during training; 0 = whole split
  return c


_DEFAULTS = None  # base_config(), built on first use


def opt(cfg, key: str, default=None, section: str = 'data'):
  """cfg[key] when present and not None, else base_config's default (the one place defaults
  live). `cfg` is the config's `section` ('data', 'model', 'eval'), or the whole config for
  section '' (top-level keys such as keep_checkpoints); a config written before a key existed,
  or a test's partial config, omits keys. `default` is only for keys base_config does not set."""
  global _DEFAULTS  # pylint: disable=global-statement
  value = cfg.get(key, None) if cfg is not None else None
  if value is not None:
    return value
  if _DEFAULTS is None:
    _DEFAULTS = base_config()
  known = _DEFAULTS if section == '' else _DEFAULTS.get(section, None)
  if known is not None and key in known and known[key] is not None:
    if default is not None:
      where = f'{section}.{key}' if section else key
      raise ValueError(f'opt({where}): base_config sets its default; pass none here')
    return known[key]
  return default

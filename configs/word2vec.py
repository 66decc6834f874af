r"""word2vec (CBOW / skip-gram, negative sampling) on the 15.4M-word English corpus.

Run (from the repository root):

  python -m train.word2vec --config=configs/word2vec.py --workdir=workdirs/w2v_cbow
  python -m train.word2vec --config=configs/word2vec.py:objective=skipgram --workdir=workdirs/w2v_sg
  python -m train.word_eval --workdir=workdirs/w2v_cbow --query=king,bible,perl

Variants via the arg string: `objective=cbow|skipgram`, `tokens=word|sentencepiece`,
`runlocal` (a 20k-line, 1-epoch smoke test). `tokens=sentencepiece` trains on Multi30K's
joint sentencepiece ids (train split, source + target lines), with `dim` = the Transformer's
d_model, so `--config.model.embed_init=WORKDIR` can start a Transformer from the matrix:

  python -m train.word2vec --config=configs/word2vec.py:tokens=sentencepiece \
      --workdir=workdirs/w2v_sp

Measured, default settings, 5 epochs (64,730 words at min_count 5; 2.3% of WordSim353 pairs and
39.9% of analogy questions out of vocabulary), `python launch/word2vec_benchmark.py` (gensim 4.4
with 2 threads in the same run):
  skip-gram: WordSim353 Spearman 0.612, analogy 19.7% (gensim 0.589 / 19.4%); 155k words/s,
    0.93x gensim's words/s, 1.06x its words per CPU-second.
  CBOW: 0.520 / 20.3% (seed 1: 0.525 / 20.7%; batch_size=64: 0.519 / 20.3%), gensim 0.535 / 21.1%;
    286k words/s, 0.46x gensim's words/s, 0.57x per CPU-second (XLA:CPU gathers/scatters).
  sentencepiece (Multi30K ids, 10 epochs): `--config.model.embed_init=WORKDIR` on
    configs/multi30k.py:size=tiny gives test_2016 BLEU 11.8 vs 10.6 without (2 seeds each).
"""

import ml_collections as mlc

from configs import common


def get_config(arg=None):
  """`arg`: objective=cbow|skipgram, tokens=word|sentencepiece, tokenizer_config=..., runlocal."""
  a = common.parse_arg(
    arg, objective='cbow', tokens='word', runlocal=False, tokenizer_config='configs/multi30k.py'
  )
  c = mlc.ConfigDict()
  c.seed = 0  # init, subsampling, windows and noise draws derive from it
  c.batch_size = 256  # centre positions per SGD step (global; split over devices)
  c.steps_per_call = 64  # scan steps per jitted call; each step = `window` SGD steps
  c.log_every = 20  # console / TensorBoard interval, in jitted calls
  c.checkpoint_every = 1  # Orbax save interval, in epochs (train/checkpointing.py)
  c.keep_checkpoints = 2  # newest checkpoints kept
  c.num_devices = 0  # data-parallel devices (0 = all visible devices)

  c.data = mlc.ConfigDict()
  c.data.corpus = 'text' if a.tokens == 'word' else 'multi30k'  # text | multi30k | file
  c.data.path = ''  # corpus = file: a .txt or .txt.gz, one sentence per line
  c.data.max_lines = 0  # read only this many lines (0 = all)
  c.data.data_dir = None  # None -> $ATTNLAB_DATA_DIR
  c.data.tokens = a.tokens  # word (whitespace words, min_count) | sentencepiece
  c.data.min_count = 5  # word level: drop rarer words (gensim / word2vec.c default)
  c.data.tokenizer_config = a.tokenizer_config  # sentencepiece: the config whose tokenizer to reuse
  c.data.cache = True  # cache the encoded corpus under $ATTNLAB_BUILD_DIR/word2vec

  c.model = mlc.ConfigDict()
  c.model.objective = a.objective  # cbow | skipgram
  c.model.dim = 100  # vector size (sentencepiece: set to the Transformer's d_model)
  c.model.window = 5  # max context distance; the actual one is uniform in 1..window
  c.model.negatives = 5  # noise words per centre
  c.model.noise_power = 0.75  # noise ~ unigram^0.75
  c.model.sample = 1e-3  # subsampling threshold t
  c.model.subsampling = 'word2vec_c'  # word2vec_c (= gensim) | paper (keep sqrt(t/f)) | none

  c.optim = mlc.ConfigDict()
  c.optim.epochs = 5  # passes over the corpus
  c.optim.learning_rate = 0.025  # starting SGD step (gensim's alpha for both objectives)
  c.optim.min_learning_rate = 1e-4  # linear decay to this, by raw words processed (gensim)

  c.eval = mlc.ConfigDict()
  c.eval.word_sets = True  # WordSim353 + analogy (word level; needs word_eval/ data)
  c.eval.every_epoch = False  # ... after every epoch (else only at the end)
  c.eval.export = True  # write WORKDIR/vectors.txt (word2vec text format)

  if a.tokens == 'sentencepiece':
    c.model.dim = 128  # d_model of configs/multi30k.py size=tiny|default (small: 256)
    c.model.sample = 1e-4  # small corpus: subsample frequent pieces harder
    c.optim.epochs = 10  # Multi30K is ~0.8M pieces: more passes are cheap
  if a.runlocal:
    c.data.max_lines = 20000
    c.optim.epochs = 1
    c.steps_per_call = 8
    c.log_every = 5
  return c

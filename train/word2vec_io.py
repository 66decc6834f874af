"""What a word2vec run reads and writes in its workdir: the resolved config and tokenizer at the
start, checkpoints per epoch (resume), and the vectors and results at the end.

  DIR/config.json, DIR/tokenizer/ (sentencepiece runs: embed_init checks it is the same one),
  DIR/checkpoints/ (train/checkpointing.py; step = finished epochs), DIR/embeddings.npy (input
  vectors), DIR/vocab.json, DIR/vocab_kind.txt, DIR/results.json, DIR/vectors.txt (export).
  The names are train/layout.py's.
"""

from __future__ import annotations

import io
import json
import os

from absl import logging
import jax.numpy as jnp
import numpy as np

from train import layout
from train import trainer
from train import word_eval
from train.word2vec_data import Corpus, sentencepiece_tokenizer


def write_run_config(config, workdir: str) -> None:
  """Creates `workdir` and writes config.json (and tokenizer/ when training on its pieces)."""
  os.makedirs(workdir, exist_ok=True)
  layout.write_atomic(
    os.path.join(workdir, layout.CONFIG_FILE), config.to_json_best_effort(indent=2).encode()
  )
  if config.data.tokens == 'sentencepiece':  # saved so embed_init can check it is the same one
    sentencepiece_tokenizer(config).save(layout.tokenizer_dir(workdir))


def as_state(params, epoch):
  """The trainer's TrainState shape, so train/checkpointing.py saves word2vec runs too:
  step = finished epochs, no optimizer state (plain SGD)."""
  return trainer.TrainState(step=jnp.asarray(epoch, jnp.int32), params=params, opt_state={})


def resume(ckpt, params) -> tuple[object, int]:
  """(params, finished epochs) of the newest checkpoint of `ckpt`, else (`params`, 0)."""
  restored, _ = ckpt.restore_latest(as_state(params, 0))
  if restored is None:
    return params, 0
  params, start_epoch = restored.params, int(restored.step)
  logging.info('resumed after epoch %d', start_epoch)
  return params, start_epoch


def save_outputs(workdir, corpus: Corpus, params, results, export: bool):
  """embeddings.npy (input vectors), vocab.json, vocab_kind.txt, results.json, vectors.txt."""
  emb = np.asarray(params['input'], np.float32)
  buf = io.BytesIO()
  np.save(buf, emb)
  layout.write_atomic(layout.embeddings_path(workdir), buf.getvalue())
  # JSON, not TSV: sentencepiece pieces may be a tab or a newline.
  vocab = {'words': list(corpus.words), 'counts': corpus.counts.tolist()}
  layout.write_atomic(layout.vocab_path(workdir), json.dumps(vocab, ensure_ascii=False).encode())
  layout.write_atomic(layout.vocab_kind_path(workdir), corpus.kind.encode())
  layout.write_atomic(layout.w2v_results_path(workdir), json.dumps(results, indent=2).encode())
  if export:
    words = [word_eval.export_safe(w) for w in corpus.words]
    word_eval.save_word2vec_format(layout.vectors_path(workdir), words, emb)

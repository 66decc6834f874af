"""train/word2vec.py and train/word2vec_data.py: vocabulary, subsampling rate, windows, and one
end-to-end run."""

import json
import os
import pathlib

import numpy as np
import pytest

from configs import word2vec as w2v_config
from model import word2vec as w2v
from train import layout
from train import word2vec as tw
from train import word2vec_data
from train import word_eval


def test_word_corpus_vocabulary_and_oov_dropping():
  corpus = word2vec_data.build_word_corpus(['a b c a', 'b a d', 'e'], min_count=2)
  assert corpus.words == ['a', 'b']
  np.testing.assert_array_equal(corpus.counts, [3, 2])
  np.testing.assert_array_equal(corpus.ids, [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(corpus.line, [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(corpus.raw_pos, [0, 1, 3, 4, 5])
  assert corpus.raw_words == 8
  with pytest.raises(ValueError, match='min_count'):
    word2vec_data.build_word_corpus(['a b'], min_count=5)


def test_window_contexts_stay_in_line_and_window():
  ids = np.arange(10, dtype=np.int32) + 100
  line = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.int32)
  ctx = word2vec_data.window_contexts(ids, line, np.array([0, 3, 5, -1]), 2, empty=-7)
  np.testing.assert_array_equal(
    ctx, [[-7, -7, 101, 102], [101, 102, -7, -7], [-7, 104, 106, 107], [-7, -7, -7, -7]]
  )


def _config(path, objective='cbow', epochs=1, sample=0.0):
  c = w2v_config.get_config(f'objective={objective}')
  c.data.corpus, c.data.path, c.data.cache = 'file', str(path), False
  c.data.min_count = 1
  c.model.dim, c.model.window, c.model.negatives, c.model.sample = 16, 3, 4, sample
  c.batch_size, c.steps_per_call, c.log_every = 32, 4, 1
  c.optim.epochs = epochs
  c.optim.learning_rate = 0.05
  c.eval.word_sets = False
  return c


def _topic_file(path, rng, lines=800, topics=6, per_topic=4, length=10):
  words = [[f't{t}w{i}' for i in range(per_topic)] for t in range(topics)]
  with open(path, 'w') as f:
    for _ in range(lines):
      t = rng.integers(topics)
      f.write(' '.join(words[t][i] for i in rng.integers(0, per_topic, length)) + '\n')


def test_epoch_chunks_cover_the_kept_words_once_with_uniform_windows(tmp_path):
  rng = np.random.default_rng(0)
  _topic_file(tmp_path / 'c.txt', rng)
  c = _config(tmp_path / 'c.txt', sample=1e-2)
  corpus = word2vec_data.load_corpus(c)
  keep = w2v.keep_probability(corpus.counts, c.model.sample)
  table = w2v.noise_table(w2v.noise_distribution(corpus.counts))
  centres, sizes, lrs = [], [], []
  for chunk, lr, done in word2vec_data.epoch_chunks(corpus, c, 0, table, keep):
    for b, batch in enumerate(chunk, 1):
      live = batch['w'] < len(corpus.words)
      centres.append(batch['w'][live])
      sizes += [b] * int(live.sum())
    lrs.append(lr)
  assert done == corpus.raw_words
  centres = np.concatenate(centres)
  # subsampling keeps each occurrence with probability keep[w]: compare the expected count
  expected = keep[corpus.ids].sum()
  assert abs(len(centres) - expected) < 4 * np.sqrt(expected)
  share = np.bincount(sizes, minlength=4)[1:] / len(sizes)
  np.testing.assert_allclose(share, 1 / 3, atol=0.03)
  lrs = np.concatenate(lrs)
  assert (np.diff(lrs) <= 0).all() and lrs[0] <= c.optim.learning_rate


def test_one_step_takes_its_centres_from_far_apart_lanes(tmp_path):
  """A degenerate line (one word repeated 100 times) must not fill an SGD step with copies of
  that word: each of the B slots walks its own slice of the corpus (word2vec.c's threads)."""
  rng = np.random.default_rng(0)
  _topic_file(tmp_path / 'c.txt', rng, lines=600)
  with open(tmp_path / 'c.txt', 'a') as f:
    f.write(' '.join(['spam'] * 100) + '\n')
  c = _config(tmp_path / 'c.txt', sample=0)
  c.steps_per_call = 16  # a call = 16 steps x 3 windows x 32 lanes; lanes 48 apart
  corpus = word2vec_data.load_corpus(c)
  keep = np.ones(len(corpus.words))
  table = w2v.noise_table(w2v.noise_distribution(corpus.counts))
  spam = corpus.words.index('spam')
  most, total = 0, 0
  for chunk, _, _ in word2vec_data.epoch_chunks(corpus, c, 0, table, keep):
    for batch in chunk:
      per_step = (batch['w'] == spam).sum(axis=1)  # [S]: copies of 'spam' per SGD step
      most, total = max(most, int(per_step.max())), total + int(per_step.sum())
  assert total == 100  # every occurrence is still a centre once
  assert most <= 3, f'{most} of {c.batch_size} centres in one step are the same word'


def test_train_end_to_end_planted_topics_export_and_resume(tmp_path):
  rng = np.random.default_rng(1)
  _topic_file(tmp_path / 'c.txt', rng, lines=1500)
  c = _config(tmp_path / 'c.txt', epochs=2)
  results = tw.train(c, str(tmp_path / 'run'))
  assert results['words_per_s'] == pytest.approx(
    results['raw_words_per_epoch'] * 2 / results['train_seconds']
  )
  losses = [h['loss_per_pair'] for h in results['history']]
  assert losses[1] < losses[0]
  words, vectors = word_eval.load_word2vec_format(layout.vectors_path(tmp_path / 'run'))
  run_words, run_vectors = word_eval.load_run(tmp_path / 'run')
  assert words == run_words
  np.testing.assert_array_equal(vectors, run_vectors)
  same_topic = [word_eval.nearest(words, vectors, w, 1)[0][0][:2] == w[:2] for w in words]
  assert np.mean(same_topic) == 1.0
  saved = json.loads(pathlib.Path(layout.w2v_results_path(tmp_path / 'run')).read_text())
  assert saved['epochs'] == 2 and saved['vocab_size'] == 24
  # resuming a finished run trains nothing more and reproduces the vectors
  again = tw.train(c, str(tmp_path / 'run'))
  assert again['history'] == []
  np.testing.assert_array_equal(word_eval.load_run(tmp_path / 'run')[1], run_vectors)


def test_a_second_writer_is_refused_before_reading_the_corpus(tmp_path):
  """word2vec takes the workdir lock of train.main (layout.WorkdirLock) before any corpus read."""
  config = w2v_config.get_config()
  config.data.corpus = 'file'
  config.data.path = str(tmp_path / 'never_read.txt')  # does not exist: reading it would raise
  with layout.WorkdirLock(tmp_path / 'w'):
    with pytest.raises(layout.WorkdirBusy, match=str(os.getpid())):
      tw.train(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w' / 'config.json').exists()

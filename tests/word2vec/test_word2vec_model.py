"""model/word2vec.py: distributions against their formulas, the SGD step against a NumPy
reference, loss going down, planted structure recovered, sharded == single device."""

import pathlib

import jax
import numpy as np
import pytest

from model import word2vec as w2v
from train import embed_init
from train import layout
from train import word2vec as w2v_train


def test_noise_distribution_is_unigram_to_the_075():
  counts = np.array([100, 10, 1, 0, 50])
  p = w2v.noise_distribution(counts)
  expected = counts**0.75 / (counts**0.75).sum()
  np.testing.assert_allclose(p, expected, rtol=1e-12)
  assert p[3] == 0


def test_noise_table_frequencies_match_probabilities():
  p = w2v.noise_distribution(np.array([1000, 300, 20, 7, 1]))
  table = w2v.noise_table(p, size=100_000)
  freq = np.bincount(table, minlength=len(p)) / len(table)
  np.testing.assert_allclose(freq, p, atol=2 / 100_000)


def test_keep_probability_formulas():
  counts = np.array([1_000_000, 10_000, 100, 1])
  t = 1e-3
  thr = t * counts.sum()
  c_variant = np.minimum((np.sqrt(counts / thr) + 1) * thr / counts, 1)
  paper = np.minimum(np.sqrt(thr / counts), 1)
  np.testing.assert_allclose(w2v.keep_probability(counts, t, 'word2vec_c'), c_variant)
  np.testing.assert_allclose(w2v.keep_probability(counts, t, 'paper'), paper)
  np.testing.assert_array_equal(w2v.keep_probability(counts, t, 'none'), 1)
  # the most frequent word is the only one subsampled here
  assert w2v.keep_probability(counts, t)[0] < 0.1
  with pytest.raises(ValueError, match='word2vec_c'):
    w2v.keep_probability(counts, t, 'bogus')


def _reference_step(w_in, w_out, w, ctx, neg, lr, objective):
  """word2vec.c's arithmetic, one pair at a time, all gradients from the old parameters."""
  vocab = len(w_in)
  d_in, d_out, loss, pairs = np.zeros_like(w_in), np.zeros_like(w_out), 0.0, 0
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  for b in range(len(w)):
    if w[b] >= vocab:
      continue
    targets = [(w[b], 1.0)] + [(n, 0.0) for n in neg[b] if n != w[b]]
    context = [c for c in ctx[b] if c < vocab]
    if objective == 'cbow':
      if not context:
        continue
      pairs += 1
      h = w_in[context].mean(0)
      err = np.zeros_like(h)
      for t, label in targets:
        x = h @ w_out[t]
        loss -= np.log(sig(x if label else -x))
        g = (label - sig(x)) * lr
        err += g * w_out[t]
        d_out[t] += g * h
      for c in context:
        d_in[c] += err
    else:
      for c in context:
        pairs += 1
        h = w_in[c]
        for t, label in targets:
          x = h @ w_out[t]
          loss -= np.log(sig(x if label else -x))
          g = (label - sig(x)) * lr
          d_in[c] += g * w_out[t]
          d_out[t] += g * h
  return w_in + d_in, w_out + d_out, loss, pairs


def _random_batch(rng, vocab, batch, window=2, negatives=3):
  w = rng.integers(0, vocab, batch).astype(np.int32)
  w[-1] = vocab  # an empty (padding) centre
  ctx = rng.integers(0, vocab, (batch, 2 * window)).astype(np.int32)
  ctx[rng.random(ctx.shape) < 0.3] = vocab  # empty window slots
  ctx[1] = vocab  # a centre with no context at all
  neg = rng.integers(0, vocab, (batch, negatives)).astype(np.int32)
  neg[0, 0] = w[0]  # a noise draw equal to the centre is skipped
  return {'w': w, 'ctx': ctx, 'neg': neg}


@pytest.mark.parametrize('objective', w2v.OBJECTIVES)
def test_sgd_step_matches_numpy_reference(objective):
  rng = np.random.default_rng(0)
  vocab, dim = 7, 4  # small vocab: many repeated rows, so colliding updates must add up
  params = {
    'input': rng.normal(size=(vocab, dim)).astype(np.float32),
    'output': rng.normal(size=(vocab, dim)).astype(np.float32),
  }
  batch = _random_batch(rng, vocab, 6)
  new, loss, pairs = jax.jit(w2v.sgd_step, static_argnums=3)(params, batch, 0.1, objective)
  ref_in, ref_out, ref_loss, ref_pairs = _reference_step(
    params['input'].astype(np.float64),
    params['output'].astype(np.float64),
    batch['w'],
    batch['ctx'],
    batch['neg'],
    0.1,
    objective,
  )
  assert float(pairs) == ref_pairs
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  np.testing.assert_allclose(new['input'], ref_in, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new['output'], ref_out, rtol=1e-5, atol=1e-6)


def _topic_chunks(rng, steps, batch, topics=6, per_topic=4, window=2, negatives=4):
  """Centres and windows from sentences that each use the words of one topic only."""
  vocab = topics * per_topic
  topic = rng.integers(0, topics, (steps, batch, 1))
  w = topic[..., 0] * per_topic + rng.integers(0, per_topic, (steps, batch))
  ctx = topic * per_topic + rng.integers(0, per_topic, (steps, batch, 2 * window))
  neg = rng.integers(0, vocab, (steps, batch, negatives))
  return vocab, {k: v.astype(np.int32) for k, v in {'w': w, 'ctx': ctx, 'neg': neg}.items()}


@pytest.mark.parametrize('objective', w2v.OBJECTIVES)
def test_loss_decreases_and_planted_topics_are_nearest(objective):
  rng = np.random.default_rng(1)
  vocab, chunk = _topic_chunks(rng, steps=200, batch=16)
  params = w2v.init_params(jax.random.key(0), vocab, 16)
  step = w2v_train.make_train_chunk(objective)
  params, loss_S, pairs_S = step(params, chunk, np.full(200, 0.05, np.float32))
  per_pair = np.asarray(loss_S) / np.asarray(pairs_S)
  assert per_pair[-20:].mean() < 0.7 * per_pair[:20].mean()
  unit = np.asarray(params['input'])
  unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
  sims = unit @ unit.T
  np.fill_diagonal(sims, -np.inf)
  nearest = sims.argmax(1)
  assert (nearest // 4 == np.arange(vocab) // 4).all()


@pytest.mark.parametrize('objective', w2v.OBJECTIVES)
def test_sharded_over_8_devices_equals_one_device(objective):
  assert jax.device_count() >= 8, 'tests/conftest.py should give 8 simulated CPU devices'
  rng = np.random.default_rng(2)
  vocab, dim, steps = 50, 8, 5
  # a list of batches with different window sizes, as train/word2vec.py feeds it
  chunk = [
    {
      k: np.stack([_random_batch(rng, vocab, 16, window)[k] for _ in range(steps)])
      for k in ('w', 'ctx', 'neg')
    }
    for window in (1, 2)
  ]
  lr = np.linspace(0.05, 0.01, steps).astype(np.float32)
  init = w2v.init_params(jax.random.key(0), vocab, dim)
  init['output'] = init['input'][::-1] * 3  # non-zero outputs so every term is exercised
  one, loss1, pairs1 = w2v_train.make_train_chunk(objective)(
    jax.tree.map(np.array, init), chunk, lr
  )
  mesh = w2v_train.data_mesh(8)
  many, loss8, pairs8 = w2v_train.make_train_chunk(objective, mesh)(
    jax.tree.map(np.array, init), chunk, lr
  )
  np.testing.assert_array_equal(pairs1, pairs8)
  np.testing.assert_allclose(loss1, loss8, rtol=1e-6)
  for k in ('input', 'output'):
    np.testing.assert_allclose(one[k], many[k], rtol=1e-6, atol=1e-7)
    assert not np.allclose(many[k], init[k])


def test_load_embedding_matrix_checks_kind_and_shape(tmp_path):
  emb = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
  np.save(layout.embeddings_path(tmp_path), emb)
  pathlib.Path(layout.vocab_kind_path(tmp_path)).write_text('word')
  with pytest.raises(ValueError, match='sentencepiece'):
    embed_init.load_embedding_matrix(str(tmp_path), 10, 4)
  pathlib.Path(layout.vocab_kind_path(tmp_path)).write_text('sentencepiece')
  with pytest.raises(ValueError, match='model.dim=8'):
    embed_init.load_embedding_matrix(str(tmp_path), 10, 8)
  np.testing.assert_array_equal(embed_init.load_embedding_matrix(str(tmp_path), 10, 4), emb)
  scaled = embed_init.load_embedding_matrix(str(tmp_path), 10, 4, std=0.02)
  np.testing.assert_allclose(scaled.std(), 0.02, rtol=1e-5)
  np.testing.assert_allclose(scaled / emb, scaled[0, 0] / emb[0, 0], rtol=1e-5)


def test_init_embeddings_from_replaces_only_token_tables(tmp_path):
  emb = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
  np.save(layout.embeddings_path(tmp_path), emb)
  pathlib.Path(layout.vocab_kind_path(tmp_path)).write_text('sentencepiece')
  params = {
    'embed': {'embedding': np.zeros((10, 4), np.float32)},
    'target_embed': {'embedding': np.ones((10, 4), np.float32)},
    'decoder': {'w': np.full((4, 4), 7.0, np.float32)},
  }
  out = embed_init.init_embeddings_from(params, str(tmp_path), std=0.5)
  np.testing.assert_allclose(out['embed']['embedding'], emb / emb.std() * 0.5, rtol=1e-5)
  np.testing.assert_allclose(out['target_embed']['embedding'], out['embed']['embedding'])
  assert out['decoder'] is params['decoder']
  assert (params['embed']['embedding'] == 0).all()  # input untouched
  with pytest.raises(ValueError, match='embed/embedding'):
    embed_init.init_embeddings_from({'decoder': {}}, str(tmp_path))


def test_load_embedding_matrix_refuses_another_tokenizer(tmp_path):
  np.save(layout.embeddings_path(tmp_path), np.ones((10, 4), np.float32))
  pathlib.Path(layout.vocab_kind_path(tmp_path)).write_text('sentencepiece')
  mine = pathlib.Path(layout.tokenizer_dir(tmp_path))
  mine.mkdir()
  (mine / 'spm.model').write_bytes(b'model-a')
  other = tmp_path / 'transformer_tokenizer'
  other.mkdir()
  (other / 'spm.model').write_bytes(b'model-a')
  assert embed_init.load_embedding_matrix(str(tmp_path), 10, 4, tokenizer_dir=str(other)).shape == (
    10,
    4,
  )
  (other / 'spm.model').write_bytes(b'model-b')
  with pytest.raises(ValueError, match='another tokenizer'):
    embed_init.load_embedding_matrix(str(tmp_path), 10, 4, tokenizer_dir=str(other))

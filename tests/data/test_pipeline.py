"""Batches: layouts of contracts.md, packing vs bucketing, resumption, sharding, eval coverage."""

import collections
import json

import grain
import numpy as np
import pytest

from data_testutil import make_config
from train import data
from train.data import batching
from train.data import pipeline
from train.data.tokenizer import BOS, EOS


def _lengthgen(**kw):
  base = dict(
    name='lengthgen',
    task='reverse',
    train_max_len=8,
    test_max_len=16,
    num_train=200,
    num_eval=40,
    max_src_len=20,
    max_tgt_len=20,
    batch_size=8,
  )
  base.update(kw)
  return make_config(**base)


def _segments(batch, row, group):
  """{segment id: (positions, {key: values})} of one row, for keys in the group."""
  keys = ['inputs'] if group == 'inputs' else ['decoder_inputs', 'targets', 'weights']
  seg = batch[f'{group}_segment'][row]
  out = {}
  for s in np.unique(seg[seg > 0]):
    mask = seg == s
    out[int(s)] = (
      batch[f'{group}_position'][row][mask],
      {k: batch[k][row][mask] for k in keys if k in batch},
    )
  return out


def _examples_of(batch):
  """The (inputs, targets, decoder_inputs, weights) tuples held by a bucketed or packed batch."""
  found = []
  for row in range(batch['targets'].shape[0]):
    tgt = _segments(batch, row, 'targets')
    src = _segments(batch, row, 'inputs') if 'inputs' in batch else {}
    for s, (pos, seq) in tgt.items():
      assert list(pos) == list(range(len(pos))), 'positions restart at 0 in every segment'
      inputs = tuple(src[s][1]['inputs']) if src else ()
      found.append(
        (inputs, tuple(seq['targets']), tuple(seq['decoder_inputs']), tuple(seq['weights']))
      )
  return found


def test_encoder_decoder_layout(multi30k_config, multi30k_tokenizer):
  batch = next(data.make_train_iterator(multi30k_config, multi30k_tokenizer))
  assert batch['targets'].shape[0] == 32 and batch['inputs'].dtype == np.int32
  assert batch['weights'].dtype == np.float32
  np.testing.assert_array_equal(batch['weights'], (batch['targets'] > 0).astype(np.float32))
  for inputs, targets, dec, _ in _examples_of(batch):
    assert inputs[-1] == EOS and targets[-1] == EOS and EOS not in targets[:-1]
    assert dec == (BOS,) + targets[:-1]  # decoder_inputs = [bos] + y, targets = y + [eos]
    assert multi30k_tokenizer.decode(np.array(targets)) == multi30k_tokenizer.decode(dec[1:])


def test_decoder_only_layout():
  config = _lengthgen(arch='decoder_only')
  tok = data.get_tokenizer(config)
  batch = next(data.make_train_iterator(config, tok))
  assert 'inputs' not in batch
  for _, targets, dec, weights in _examples_of(batch):
    eos_at = targets.index(EOS)
    src, y = targets[:eos_at], targets[eos_at + 1 : -1]
    assert tok.decode(np.array(y)) == tok.decode(np.array(src))[::-1]  # reverse task
    assert dec == (BOS,) + targets[:-1]
    assert weights == (0.0,) * (eos_at + 1) + (1.0,) * (len(y) + 1)
  [ev] = data.make_eval_batches(config, tok, 'test', batch_size=64)[:1]
  real = ev['index'] >= 0
  for row in np.flatnonzero(real)[:5]:
    prompt = ev['inputs'][row][ev['inputs_segment'][row] > 0]
    n = len(prompt)
    np.testing.assert_array_equal(ev['targets'][row][:n], prompt)  # x starts with the prompt
    assert prompt[-1] == EOS and ev['weights'][row][:n].sum() == 0


def test_lm_layout(tmp_path, tmp_build):
  from data_testutil import write_gz

  write_gz(tmp_path / 'text' / 'en_15m.txt.gz', [f'w{i} x y z' for i in range(300)])
  config = make_config(
    name='text',
    data_dir=str(tmp_path),
    tokenizer='char',
    max_tgt_len=6,
    length_policy='truncate',
    batch_size=4,
  )
  tok = data.get_tokenizer(config)
  it = data.make_train_iterator(config, tok)
  batch = next(it)
  assert 'inputs' not in batch and batch['targets'].shape[1] == 6
  for _, targets, dec, weights in _examples_of(batch):
    assert len(targets) == 6 and targets[-1] == EOS and dec == (BOS,) + targets[:-1]
    assert weights == (1.0,) * 6
  assert it.stats['truncated'] == it.stats['seen'] > 0


def test_packed_batches_hold_the_same_examples_as_bucketed():
  config = _lengthgen(task='duplicate')
  tok = data.get_tokenizer(config)
  featurizer = pipeline.Featurizer(tok, 'encoder_decoder', 20, 20, 'filter')
  feats = [featurizer(ex) for ex in data.load_examples(config, 'train')]
  feats = [f for f in feats if f is not None]
  parent = lambda: grain.MapDataset.source(feats).to_iter_dataset()
  bounds = [8, 20]
  bucketed = list(batching.BucketBatchDataset(parent(), 8, bounds, seed=0))
  packed = list(batching.PackDataset(parent(), 8, 24))
  from_buckets = [e for b in bucketed for e in _examples_of(b)]
  from_packs = [e for b in packed for e in _examples_of(b)]
  assert len(from_buckets) == len(feats)
  assert collections.Counter(from_packs) == collections.Counter(from_buckets)
  assert all(b['targets'].shape == (8, 24) for b in packed)
  assert len(packed) < len(bucketed) / 2  # rows really hold several examples
  assert all(b['targets'].shape[1] in (8, 20) for b in bucketed)


@pytest.mark.parametrize('batching_mode', ['bucket', 'pack'])
def test_resumed_iterator_equals_uninterrupted(batching_mode):
  # 200 examples, 8 rows: the 40 batches below cross several epochs and bucket chunks.
  config = _lengthgen(batching=batching_mode, packed_len=40, prefetch=2)
  tok = data.get_tokenizer(config)
  it = data.make_train_iterator(config, tok)
  reference, states = [], []
  for _ in range(40):
    states.append(json.loads(json.dumps(it.get_state())))  # state survives JSON
    reference.append(next(it))
  for k in (0, 7, 23, 39):
    resumed = data.make_train_iterator(config, tok)
    next(resumed)  # a used iterator must be rewound by set_state too
    resumed.set_state(states[k])
    for expected in reference[k:]:
      got = next(resumed)
      assert got.keys() == expected.keys()
      for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
  different_seed = data.make_train_iterator(
    _lengthgen(batching=batching_mode, packed_len=40, seed=1), tok
  )
  assert not np.array_equal(next(different_seed)['targets'], reference[0]['targets'])


def test_epochs_are_reshuffled_and_complete():
  config = _lengthgen(num_train=40, batch_size=4, max_src_len=64, max_tgt_len=64)
  featurizer = pipeline.Featurizer(data.get_tokenizer(config), 'encoder_decoder', 64, 64, None)
  num, featurize, _ = pipeline._source(config, featurizer, 0, 1)  # pylint: disable=protected-access
  it = iter(batching.ShuffledSource(num, featurize, seed=5))
  epoch1 = [tuple(next(it)['targets']) for _ in range(40)]
  epoch2 = [tuple(next(it)['targets']) for _ in range(40)]
  assert collections.Counter(epoch1) == collections.Counter(epoch2)
  assert epoch1 != epoch2


@pytest.mark.parametrize('block', [None, 7])
def test_epoch_order_is_a_fresh_permutation(block):
  a, b = (batching.epoch_order(50, seed=3, epoch=e, block=block) for e in (0, 1))
  assert sorted(a) == list(range(50)) and sorted(b) == list(range(50)) and list(a) != list(b)
  assert list(a) == list(batching.epoch_order(50, seed=3, epoch=0, block=block))
  if block:  # each block of 7 consecutive indices (the last has 1) is visited in one run
    blocks = a // 7
    assert (np.diff(blocks) != 0).sum() == 7 and list(blocks) != sorted(blocks)


def test_large_split_is_read_lazily_in_blocks(tmp_path, tmp_build, monkeypatch):
  from data_testutil import write_gz
  from train.data import datasets

  lines = [f'line {i} {"ab" * (i % 5)}'.strip() for i in range(300)]
  write_gz(tmp_path / 'text' / 'en_15m.txt.gz', lines)
  monkeypatch.setattr(datasets, 'SMALL_SPLIT', 100)
  monkeypatch.setattr(datasets.Records, 'BLOCK', 16)
  config = make_config(
    name='text', data_dir=str(tmp_path), tokenizer='char', max_tgt_len=40, batch_size=2, seed=4
  )
  records = datasets.records(config, 'train')
  assert isinstance(records, datasets.Records) and len(records) == 297
  assert sorted(records[i]['index'] for i in range(297)) == [i for i in range(300) if i % 100]
  tok = data.get_tokenizer(config)
  for p in range(2):  # each process's stream covers its half of the lines once per epoch
    featurizer = pipeline.Featurizer(tok, 'lm', 64, 40, None)
    num, featurize, block = pipeline._source(config, featurizer, p, 2)  # pylint: disable=protected-access
    assert block == 16 and num in (148, 149)
    it = iter(batching.ShuffledSource(num, featurize, seed=4, block=block))
    epoch = [tok.decode(next(it)['targets']) for _ in range(num)]
    assert len(set(epoch)) == num and set(epoch) <= set(lines)


def test_process_shards_are_disjoint_and_cover_the_split():
  config = _lengthgen(num_train=30, batch_size=6)
  tok = data.get_tokenizer(config)
  seen = []
  for p in range(3):
    featurizer = pipeline.Featurizer(tok, 'encoder_decoder', 64, 64, None, eval_fields=True)
    num, featurize, _ = pipeline._source(config, featurizer, p, 3)  # pylint: disable=protected-access
    seen.append({int(featurize(i)['index']) for i in range(num)})
  assert set.union(*seen) == set(range(30)) and sum(map(len, seen)) == 30
  batch = next(data.make_train_iterator(config, tok, process_index=1, process_count=3))
  assert batch['targets'].shape[0] == 2
  with pytest.raises(ValueError, match='not divisible'):
    data.make_train_iterator(config, tok, process_count=4)


@pytest.mark.parametrize('policy', ['filter', 'truncate'])
def test_length_policy(policy):
  config = _lengthgen(
    task='duplicate', max_src_len=6, max_tgt_len=9, length_policy=policy, bucket_boundaries=(4,)
  )
  tok = data.get_tokenizer(config)
  it = data.make_train_iterator(config, tok)
  batches = [next(it) for _ in range(10)]
  for b in batches:
    assert b['inputs_segment'].sum(1).max() <= 6 and b['targets_segment'].sum(1).max() <= 9
    assert b['inputs'].shape == b['targets'].shape and b['targets'].shape[1] in (4, 9)
  stats = it.stats
  # duplicate: a length-n input has a 2n target, so n >= 5 (of 1..8) is too long for 9 tokens.
  assert stats[{'filter': 'filtered', 'truncate': 'truncated'}[policy]] > stats['seen'] // 3
  if policy == 'truncate':
    assert any((b['targets_segment'].sum(1) == 9).any() for b in batches)


def test_eval_batches_cover_the_split_once():
  config = _lengthgen()
  tok = data.get_tokenizer(config)
  batches = data.make_eval_batches(config, tok, 'test', batch_size=16)
  index = np.concatenate([b['index'] for b in batches])
  assert sorted(index[index >= 0]) == list(range(40)) and (index < 0).sum() == 8
  examples = data.load_examples(config, 'test')
  for b in batches:
    for row in np.flatnonzero(b['index'] >= 0):
      ex = examples[b['index'][row]]
      assert b['length'][row] == ex['length'] == len(ex['source'])  # lengths beyond train's 8
      n = b['targets_segment'][row].sum()
      assert tok.decode(b['targets'][row][:n]) == ex['target']
    assert (b['targets'][b['index'] < 0] == 0).all()
  again = data.make_eval_batches(config, tok, 'test', batch_size=16)
  assert all(np.array_equal(a['targets'], b['targets']) for a, b in zip(batches, again))
  first = data.make_eval_batches(config, tok, 'test', batch_size=16, max_examples=5)
  assert sorted(first[0]['index'][first[0]['index'] >= 0]) == [0, 1, 2, 3, 4]
  halves = [
    data.make_eval_batches(config, tok, 'test', batch_size=16, process_index=p, process_count=2)
    for p in (0, 1)
  ]
  np.testing.assert_array_equal(
    np.concatenate([halves[0][1]['index'], halves[1][1]['index']]), batches[1]['index']
  )


def test_bad_pipeline_settings():
  tok = data.get_tokenizer(_lengthgen())
  with pytest.raises(ValueError, match='valid choices'):
    data.make_train_iterator(_lengthgen(batching='sorted'), tok)
  with pytest.raises(ValueError, match='packed_len'):
    data.make_train_iterator(_lengthgen(batching='pack', packed_len=10), tok)

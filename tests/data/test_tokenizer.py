"""Tokenizers: fixed special ids, round trips on real sentences, save/load, the build cache."""

import re

import numpy as np
import pytest

from data_testutil import make_config, toy_pairs, write_multi30k
from train import data
from train.data import tokenizer as tokenizer_lib


def _spaces(s):
  """SentencePiece collapses runs of spaces; everything else must come back unchanged."""
  return re.sub(' +', ' ', s.strip(' '))


def test_real_round_trip_and_special_ids(multi30k_config, multi30k_tokenizer):
  tok = multi30k_tokenizer
  assert 7000 <= tok.vocab_size <= 8000
  assert [tok.id_to_piece(i) for i in range(4)] == ['<pad>', '</s>', '<s>', '<unk>']
  ids = tok.encode('A dog runs.')
  assert ''.join(tok.id_to_piece(i) for i in ids).replace('\u2581', ' ').strip() == 'A dog runs.'
  for ex in data.load_examples(multi30k_config, 'test_2016_flickr'):
    for side in ('source', 'target'):
      ids = tok.encode(ex[side])
      assert min(ids) >= 4, 'special ids never come out of encode'
      assert tok.decode(ids) == _spaces(ex[side])


def test_decode_stops_at_eos_and_drops_pad_and_bos(multi30k_tokenizer):
  tok = multi30k_tokenizer
  ids = tok.encode('Two dogs play in the snow.')
  padded = np.array([data.BOS] + ids + [data.EOS] + ids + [data.PAD] * 3, np.int32)
  assert tok.decode(padded) == 'Two dogs play in the snow.'


def _tiny_config(root, **kw):
  pairs = toy_pairs(60) + [
    ('the cat sleeps on a red sofa .', 'die katze schläft auf einem roten sofa .')
  ]
  write_multi30k(root, {'train': pairs, 'val': toy_pairs(2)})
  return make_config(name='multi30k', data_dir=str(root), **kw)


def test_cache_hit_reuses_the_trained_model(tmp_path, tmp_build, monkeypatch):
  config = _tiny_config(tmp_path, tokenizer='unigram', vocab_size=60)
  calls = []
  real_train = tokenizer_lib.train_sentencepiece
  monkeypatch.setattr(
    tokenizer_lib, 'train_sentencepiece', lambda *a, **k: calls.append(k) or real_train(*a, **k)
  )
  first = data.get_tokenizer(config)
  assert len(calls) == 1 and calls[0]['model_type'] == 'unigram'
  second = data.get_tokenizer(config)
  assert len(calls) == 1, 'second call must load the cached model'
  sentence = 'the cat sleeps on a red sofa .'
  assert second.encode(sentence) == first.encode(sentence)
  config.data.vocab_size = 50  # a different input -> a different cache entry
  data.get_tokenizer(config)
  assert len(calls) == 2


def test_bpe_and_separate_vocabularies(tmp_path, tmp_build):
  config = _tiny_config(tmp_path, tokenizer='bpe', vocab_size=70, joint_vocab=False)
  tok = data.get_tokenizer(config)
  assert isinstance(tok, tokenizer_lib.PairTokenizer)
  german = 'die katze schläft auf einem roten sofa .'
  assert tok.decode(tok.encode(german, side='target'), side='target') == german
  assert tok.decode(tok.encode('a dog runs', side='source'), side='source') == 'a dog runs'
  tok.save(tmp_path / 'saved')
  loaded = data.load_tokenizer(tmp_path / 'saved')
  assert loaded.encode(german, side='target') == tok.encode(german, side='target')
  assert loaded.vocab_size == tok.vocab_size


def test_char_tokenizer_for_lengthgen(tmp_path):
  config = make_config(name='lengthgen', task='addition', num_train=50, num_eval=10)
  tok = data.get_tokenizer(config)
  assert tok.kind == 'char' and tok.vocab_size == 4 + 26 + 10 + 1
  ids = tok.encode('907+15')
  assert len(ids) == 6 and min(ids) >= 4
  assert tok.decode(ids + [data.EOS, 9, 9]) == '907+15'
  assert tok.decode(tok.encode('12?')) == '12\u2047'  # unknown characters map to unk
  assert [tok.id_to_piece(i) for i in range(4)] == ['<pad>', '</s>', '<s>', '<unk>']
  assert ''.join(tok.id_to_piece(i) for i in ids) == '907+15'
  with pytest.raises(IndexError, match='outside the vocabulary'):
    tok.id_to_piece(tok.vocab_size)
  tok.save(tmp_path / 'char')
  assert data.load_tokenizer(tmp_path / 'char').encode('a+b') == tok.encode('a+b')


def test_bad_tokenizer_settings(tmp_path):
  with pytest.raises(ValueError, match='valid choices'):
    data.get_tokenizer(make_config(name='lengthgen', tokenizer='wordpiece'))
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    data.load_tokenizer(tmp_path)

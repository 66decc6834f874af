"""Tests for train/evaluate.py pieces that need no trained model (the rest: test_evaluate_e2e)."""

import numpy as np
import pytest

from eval_helpers import CharTokenizer
from train import decode_text
from train import evaluate


def _rows(batches, key):
  """`{index: row}` over the real rows of every batch."""
  return {int(i): b[key][r] for b in batches for r, i in enumerate(b['index']) if i >= 0}


def test_text_batches_encoder_decoder_layout():
  tok = CharTokenizer()
  sources, refs = ['hello', 'a', 'longer sentence'], ['hallo', 'b', 'längerer Satz']
  batches = decode_text.text_batches(
    tok, sources, refs, arch='encoder_decoder', batch_size=2, max_src_len=64, max_tgt_len=64
  )
  assert len(batches) == 2
  assert sorted(_rows(batches, 'inputs')) == [0, 1, 2]
  # One width for all batches, so decoding compiles once.
  assert len({b['inputs'].shape for b in batches}) == 1
  for i, src in enumerate(sources):
    ids = tok.encode(src) + [1]
    row = _rows(batches, 'inputs')[i]
    np.testing.assert_array_equal(row[: len(ids)], ids)
    assert (row[len(ids) :] == 0).all()
    np.testing.assert_array_equal(
      _rows(batches, 'inputs_position')[i][: len(ids)], np.arange(len(ids))
    )
    assert _rows(batches, 'inputs_segment')[i].sum() == len(ids)
    y = tok.encode(refs[i]) + [1]
    tgt, dec = _rows(batches, 'targets')[i], _rows(batches, 'decoder_inputs')[i]
    np.testing.assert_array_equal(tgt[: len(y)], y)
    np.testing.assert_array_equal(dec[: len(y)], [2] + y[:-1])
    np.testing.assert_array_equal(_rows(batches, 'weights')[i], tgt > 0)
  # The padding row of the last batch is marked with index -1 and carries no weight.
  last = batches[-1]
  assert list(last['index']).count(-1) == 1
  assert last['weights'][list(last['index']).index(-1)].sum() == 0


def test_text_batches_decoder_only_weights_cover_target_part():
  tok = CharTokenizer()
  batches = decode_text.text_batches(
    tok, ['ab'], ['xyz'], arch='decoder_only', batch_size=1, max_src_len=16, max_tgt_len=16
  )
  b = batches[0]
  src, tgt = tok.encode('ab') + [1], tok.encode('xyz') + [1]
  x = src + tgt
  np.testing.assert_array_equal(b['inputs'][0, : len(src)], src)  # the prompt
  np.testing.assert_array_equal(b['targets'][0, : len(x)], x)
  np.testing.assert_array_equal(b['decoder_inputs'][0, : len(x)], [2] + x[:-1])
  np.testing.assert_array_equal(b['weights'][0, : len(x)], [0] * len(src) + [1] * len(tgt))


def test_text_batches_truncate_and_no_reference():
  tok = CharTokenizer()
  batches = decode_text.text_batches(
    tok, ['abcdefghij'], None, arch='encoder_decoder', batch_size=4, max_src_len=5, max_tgt_len=5
  )
  b = batches[0]
  np.testing.assert_array_equal(b['inputs'][0, :5], tok.encode('abcd') + [1])
  assert b['inputs_segment'][0].sum() == 5
  assert 'targets' not in b


def test_decode_settings_validation_and_tags():
  assert decode_text.DecodeSettings('greedy').tag == 'greedy'
  assert decode_text.DecodeSettings('beam', 5, 0.8).tag == 'beam5-a0.8'
  assert 'beam_size' not in decode_text.DecodeSettings('greedy').as_dict()
  with pytest.raises(ValueError, match="'beam', 'greedy'"):
    decode_text.DecodeSettings('sample')


def test_results_paths_default_and_override(tmp_path):
  default = decode_text.DecodeSettings()
  j, h = evaluate._results_paths(str(tmp_path), 'val', 100, default, default, None)
  assert j == str(tmp_path / 'eval' / 'val-100.json')
  assert h == str(tmp_path / 'eval' / 'val-100.hyp.txt')
  j, _ = evaluate._results_paths(
    str(tmp_path), 'val', 100, decode_text.DecodeSettings('greedy'), default, None
  )
  assert j.endswith('val-100-greedy.json')
  j, h = evaluate._results_paths(
    str(tmp_path), 'val', 7, default, default, str(tmp_path / 'o-{split}-{step}.json')
  )
  assert j.endswith('o-val-7.json') and h.endswith('o-val-7.hyp.txt')


def test_score_lengthgen_reports_exact_match_per_task_and_target_length():
  examples = {
    0: {'target': 'ab', 'length': 2},
    1: {'target': 'abab', 'length': 2},
    2: {'target': 'c', 'length': 1},
    3: {'target': 'cc', 'length': 1},
  }
  hyps = {0: 'ab', 1: 'aba', 2: 'c', 3: 'cc'}
  r = decode_text.score(hyps, examples, CharTokenizer())
  assert r['exact_match'] == pytest.approx(0.75)
  assert r['exact_match_by_length'] == {
    '1': {'accuracy': 1.0, 'count': 2},
    '2': {'accuracy': 0.5, 'count': 2},
  }
  assert r['exact_match_by_target_length'] == {
    '1': {'accuracy': 1.0, 'count': 1},
    '2': {'accuracy': 1.0, 'count': 2},
    '4': {'accuracy': 0.0, 'count': 1},
  }
  assert r['hypotheses'] == ['ab', 'aba', 'c', 'cc'] and r['num_sentences'] == 4
  # Translation data (no `length`) gets no exact-match keys.
  plain = decode_text.score({0: 'a b c d e'}, {0: {'target': 'a b c d e'}}, CharTokenizer())
  assert 'exact_match' not in plain and plain['bleu'] == pytest.approx(100.0)

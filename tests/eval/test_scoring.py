"""Tests for train/scoring.py: sacreBLEU wrapper, exact match, text files, ledger."""

import gzip
import json
import os
import random

import pytest

from train import scoring

REFS = [
  'Ein Mann fährt auf einem Fahrrad die Straße entlang.',
  'Zwei Hunde spielen im Schnee.',
  'Eine Frau in einem roten Kleid singt auf einer Bühne.',
  'Kinder spielen Fußball auf einer grünen Wiese.',
  'Ein alter Mann sitzt auf einer Bank im Park.',
  'Mehrere Leute warten an einer Bushaltestelle.',
  'Ein Junge springt von einem Felsen ins Wasser.',
  'Zwei Frauen trinken Kaffee in einem Café.',
]


def test_perfect_hypotheses_score_100():
  result = scoring.score_corpus(REFS, REFS)
  assert result['bleu'] == pytest.approx(100.0)
  assert result['chrf'] == pytest.approx(100.0)
  # The signature pins the settings that make the number comparable.
  sig = result['sacrebleu_signature']
  assert 'tok:13a' in sig and 'case:mixed' in sig and 'nrefs:1' in sig


def test_shuffled_hypotheses_score_low():
  shuffled = REFS[1:] + REFS[:1]  # every hypothesis paired with another sentence's reference
  result = scoring.score_corpus(shuffled, REFS)
  assert result['bleu'] < 10.0
  assert result['chrf'] < 40.0


def test_bleu_is_cased_and_detokenized():
  # Lower-casing the hypothesis must cost BLEU (cased scoring); 13a splits the final period,
  # so a detokenized hypothesis matches a detokenized reference perfectly.
  lowered = scoring.score_corpus([r.lower() for r in REFS], REFS)
  assert lowered['bleu'] < 100.0
  assert scoring.score_corpus(
    ['Zwei Hunde spielen im Schnee.'], ['Zwei Hunde spielen im Schnee .']
  )['bleu'] == pytest.approx(100.0)


def test_score_rejects_misaligned_inputs():
  with pytest.raises(ValueError, match='3 hypotheses but 2 references'):
    scoring.score_corpus(['a', 'b', 'c'], ['a', 'b'])
  with pytest.raises(ValueError, match='empty'):
    scoring.score_corpus([], [])


def test_exact_match_overall_and_per_length():
  hyps = ['a b', 'c', 'd e f', 'x', 'g h i ']
  refs = ['a b', 'c', 'd e g', 'y', 'g h i']
  lengths = [2, 1, 3, 1, 3]
  result = scoring.exact_match(hyps, refs, lengths)
  assert result['exact_match'] == pytest.approx(3 / 5)
  assert result['exact_match_by_length'] == {
    '1': {'accuracy': 0.5, 'count': 2},
    '2': {'accuracy': 1.0, 'count': 1},
    '3': {'accuracy': 0.5, 'count': 2},
  }
  assert 'exact_match_by_length' not in scoring.exact_match(hyps, refs)


def test_read_lines_plain_and_gzip_agree(tmp_path):
  lines = ['erste Zeile', '', 'dritte Zeile mit Ümlaut']
  plain = tmp_path / 'a.txt'
  plain.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  packed = tmp_path / 'a.txt.gz'
  with gzip.open(packed, 'wt', encoding='utf-8') as f:
    f.write('\r\n'.join(lines) + '\r\n')  # Windows line endings are stripped too
  assert scoring.read_lines(str(plain)) == lines
  assert scoring.read_lines(str(packed)) == lines


def test_read_lines_names_file_and_line_on_bad_utf8(tmp_path):
  bad = tmp_path / 'bad.txt'
  bad.write_bytes(b'ok\nalso ok\n\xff\xfe broken\n')
  with pytest.raises(ValueError, match=r'bad\.txt:3: not valid UTF-8'):
    scoring.read_lines(str(bad))


def test_read_lines_bad_gzip_and_missing_file(tmp_path):
  fake = tmp_path / 'fake.gz'
  fake.write_text('plain text, not gzip\n')
  with pytest.raises(ValueError, match='fake.gz: not a readable gzip'):
    scoring.read_lines(str(fake))
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    scoring.read_lines(str(tmp_path / 'nope.txt'))


def test_read_parallel_line_count_mismatch(tmp_path):
  src, ref = tmp_path / 'src.en', tmp_path / 'ref.de'
  src.write_text('a\nb\nc\n')
  ref.write_text('A\nB\n')
  with pytest.raises(ValueError, match=r'src\.en has 3 lines but .*ref\.de has 2.*line 3'):
    scoring.read_parallel(str(src), str(ref))
  sources, refs = scoring.read_parallel(str(src), None)
  assert sources == ['a', 'b', 'c'] and refs is None


def test_write_json_and_lines_are_atomic_and_readable(tmp_path):
  path = tmp_path / 'eval' / 'x.json'
  scoring.write_json(str(path), {'bleu': 12.5, 'step': 3})
  assert json.loads(path.read_text()) == {'bleu': 12.5, 'step': 3}
  hyp = tmp_path / 'eval' / 'x.hyp.txt'
  scoring.write_lines(str(hyp), ['one', 'two\nlines', ''])
  assert hyp.read_text().split('\n') == ['one', 'two lines', '', '']
  # No temporary files are left behind.
  assert sorted(os.listdir(tmp_path / 'eval')) == ['x.hyp.txt', 'x.json']


def test_ledger_records_and_skips(tmp_path):
  eval_dir = str(tmp_path / 'eval')
  assert scoring.load_ledger(eval_dir) == {}
  steps = [300, 100, 200]
  assert scoring.pending_steps(steps, {}, 'val') == [100, 200, 300]
  scoring.record_in_ledger(eval_dir, 'val', 100, os.path.join(eval_dir, 'val-100.json'))
  scoring.record_in_ledger(eval_dir, 'val', 300, os.path.join(eval_dir, 'val-300.json'))
  ledger = scoring.load_ledger(eval_dir)
  assert ledger == {'val': {'100': 'val-100.json', '300': 'val-300.json'}}
  assert scoring.pending_steps(steps, ledger, 'val') == [200]
  # Another evaluation key (other split or decode settings) is tracked separately.
  assert scoring.pending_steps(steps, ledger, 'test_2016_flickr') == [100, 200, 300]


def test_corrupt_ledger_error_names_file(tmp_path):
  (tmp_path / 'ledger.json').write_text('{not json')
  with pytest.raises(ValueError, match='ledger.json:1: corrupt'):
    scoring.load_ledger(str(tmp_path))


def test_shuffled_large_corpus_is_low():
  rng = random.Random(0)
  words = 'der die das ein eine Mann Frau Hund Katze Ball spielt läuft sitzt im auf'.split()
  refs = [' '.join(rng.choice(words) for _ in range(10)) + '.' for _ in range(200)]
  hyps = refs[:]
  rng.shuffle(hyps)
  # Random pairing of sentences over a small vocabulary still shares unigrams, but BLEU's
  # higher-order n-grams collapse, so the score stays far below a perfect match.
  assert scoring.score_corpus(hyps, refs)['bleu'] < 15.0
  assert scoring.score_corpus(refs, refs)['bleu'] == pytest.approx(100.0)

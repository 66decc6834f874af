"""train/word_eval.py: WordSim / analogy scoring on planted vectors, neighbours, text format."""

import numpy as np
import pytest
from scipy import stats

from train import word_eval


def test_export_round_trips_exactly(tmp_path):
  rng = np.random.default_rng(0)
  words = ['the', 'king', '▁queen', '<unk>', '\xa0']
  vectors = (rng.normal(size=(5, 7)) * 10.0 ** rng.integers(-8, 3, (5, 7))).astype(np.float32)
  path = tmp_path / 'v.txt'
  word_eval.save_word2vec_format(path, words, vectors)
  lines = path.read_text(encoding='utf-8').splitlines()
  assert lines[0] == '5 7' and lines[2].split(' ')[0] == 'king' and len(lines) == 6
  got_words, got = word_eval.load_word2vec_format(path)
  assert got_words == words
  np.testing.assert_array_equal(got, vectors)


def test_export_rejects_whitespace_and_reader_names_the_bad_line(tmp_path):
  with pytest.raises(ValueError, match='space, tab or newline'):
    word_eval.save_word2vec_format(tmp_path / 'x.txt', ['a b'], np.zeros((1, 2)))
  bad = tmp_path / 'bad.txt'
  bad.write_text('2 3\na 1 2 3\nb 1 2\n')
  with pytest.raises(ValueError, match=r'bad.txt:3'):
    word_eval.load_word2vec_format(bad)
  bad.write_text('two 3\n')
  with pytest.raises(ValueError, match=r'bad.txt:1'):
    word_eval.load_word2vec_format(bad)


def test_wordsim_is_spearman_over_in_vocab_pairs(tmp_path):
  path = tmp_path / 'ws.tsv'
  path.write_text('# comment\nA\tb\t9.0\na\tc\t5.0\nb\tc\t1.0\na\tzzz\t3.0\n')
  words = ['a', 'b', 'c']
  # cosines: a.b = 1, a.c = 0.6, b.c = 0.6: ties broken as Spearman's average ranks do
  vectors = np.array([[1, 0], [1, 0], [0.6, 0.8]], np.float32)
  got = word_eval.wordsim(words, vectors, path=path)
  assert got['wordsim353_pairs'] == 3
  assert got['wordsim353_oov'] == pytest.approx(0.25)
  expected = stats.spearmanr([1.0, 0.6, 0.6], [9.0, 5.0, 1.0]).statistic
  assert got['wordsim353'] == pytest.approx(expected)


def test_analogy_3cosadd_excludes_question_words_and_reports_coverage(tmp_path):
  # planted: d = b - a + c exactly for "man king woman queen"; "x y x ?" would return x
  # itself (cos = 1) if question words were not excluded
  words = ['man', 'king', 'woman', 'queen', 'x', 'y', 'z']
  vectors = np.array(
    [
      [1, 0, 0, 0],
      [1, 1, 0, 0],
      [0, 0, 1, 0],
      [0, 1, 1, 0],
      [0, 0, 0, 1],
      [0.1, 0, 0, 1],
      [0.1, 0, 0.1, 1],
    ],
    np.float32,
  )
  path = tmp_path / 'q.txt'
  path.write_text(
    ': capital-common-countries\nman king woman queen\nMAN KING woman unseen\n'
    ': gram1-adjective-to-adverb\nx y x z\n'
  )
  got = word_eval.analogy(words, vectors, path=path)
  assert got['analogy_questions'] == 2
  assert got['analogy_coverage'] == pytest.approx(2 / 3)
  assert got['analogy_semantic'] == 1.0 and got['analogy_syntactic'] == 1.0
  assert got['analogy'] == 1.0
  # cos_add against a brute-force argmax
  rng = np.random.default_rng(0)
  unit = word_eval.unit_rows(rng.normal(size=(30, 5)))
  abc = rng.integers(0, 30, (40, 3))
  brute = []
  for a, b, c in abc:
    scores = unit @ (unit[b] - unit[a] + unit[c])
    scores[[a, b, c]] = -np.inf
    brute.append(scores.argmax())
  np.testing.assert_array_equal(word_eval.cos_add(unit, abc, chunk=7), brute)


def test_nearest_neighbours_sorted_without_the_query():
  words = ['a', 'b', 'c', 'd']
  vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
  got = word_eval.nearest(words, vectors, 'a', topn=3)
  assert [w for w, _ in got] == ['b', 'c', 'd']
  assert got[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
  with pytest.raises(KeyError, match='not in the vocabulary'):
    word_eval.nearest(words, vectors, 'zzz')


def test_export_safe_escapes_only_unstorable_words():
  assert word_eval.export_safe('king') == 'king'
  assert word_eval.export_safe('\xa0') == '\xa0'
  escaped = [word_eval.export_safe(w) for w in ['\t', 'a b', '\n', '']]
  assert escaped == ['\\t', 'a\\x20b', '\\n', '<empty>']

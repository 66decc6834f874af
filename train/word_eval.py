r"""Word-vector evaluation, nearest neighbours and word2vec text-format I/O.

  python -m train.word_eval --workdir=DIR --query=king,bible          # nearest neighbours
  python -m train.word_eval --vectors=vectors.txt --eval               # WordSim353 + analogy

- WordSim353 (Finkelstein et al. 2002): Spearman correlation between cosine similarity and the
  human score over pairs with both words in vocabulary; the out-of-vocabulary share is reported.
- Google analogy (Mikolov et al. 2013): 3CosAdd, d = argmax_x cos(x, b - a + c) over unit
  vectors, excluding a, b and c; accuracy over questions fully in vocabulary, semantic (the 5
  sections not named gram*) / syntactic (gram*) / total, plus coverage. Words are lowercased,
  as the corpus is.
- word2vec text format: a "V D" header, then one "word v1 ... vD" line per word (what gensim's
  KeyedVectors.load_word2vec_format(path, binary=False) reads).
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app, flags
import numpy as np
from scipy import stats

from train import layout
from train.data import paths

WORDSIM_FILE = 'wordsim353.tsv'
ANALOGY_FILE = 'questions-words.txt'


def eval_file(name: str, data_dir=None) -> pathlib.Path:
  root = paths.data_root(data_dir)
  if not root:
    raise FileNotFoundError(
      f'{name}: set ATTNLAB_DATA_DIR (or pass data_dir) to a directory with '
      f'word_eval/{name} (like ../shared/data/).'
    )
  path = pathlib.Path(root) / 'word_eval' / name
  if not path.is_file():
    raise FileNotFoundError(f'{path} is missing; the data dir must hold word_eval/{name}.')
  return path


def unit_rows(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# ------------------------------------------------------------------ WordSim353
def read_wordsim(path) -> list[tuple[str, str, float]]:
  pairs = []
  for lineno, line in enumerate(open(path, encoding='utf-8'), 1):
    if not line.strip() or line.startswith('#'):
      continue
    parts = line.rstrip('\n').split('\t')
    try:
      pairs.append((parts[0].lower(), parts[1].lower(), float(parts[2])))
    except (IndexError, ValueError) as e:
      raise ValueError(f"{path}:{lineno}: expected 'word<TAB>word<TAB>score', got {line!r}") from e
  return pairs


def wordsim(words, vectors, data_dir=None, path=None) -> dict:
  """{'wordsim353': Spearman rho, 'wordsim353_oov': share of pairs skipped, 'wordsim353_pairs'}."""
  pairs = read_wordsim(path or eval_file(WORDSIM_FILE, data_dir))
  index = {w: i for i, w in enumerate(words)}
  unit = unit_rows(vectors)
  found = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
  if len(found) < 2:
    return {
      'wordsim353': float('nan'),
      'wordsim353_oov': 1 - len(found) / len(pairs),
      'wordsim353_pairs': len(found),
    }
  ia, ib, human = map(np.asarray, zip(*found))
  cosine = (unit[ia] * unit[ib]).sum(1)
  rho = stats.spearmanr(cosine, human).statistic
  return {
    'wordsim353': float(rho),
    'wordsim353_oov': 1 - len(found) / len(pairs),
    'wordsim353_pairs': len(found),
  }


# ------------------------------------------------------------------ analogy (3CosAdd)
def read_analogies(path) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
  sections = []
  for lineno, line in enumerate(open(path, encoding='utf-8'), 1):
    if line.startswith(':'):
      sections.append((line[1:].strip(), []))
    elif line.strip():
      quad = line.lower().split()
      if len(quad) != 4 or not sections:
        raise ValueError(f"{path}:{lineno}: expected ': section' or 4 words, got {line!r}")
      sections[-1][1].append(tuple(quad))
  return sections


def cos_add(unit: np.ndarray, abc: np.ndarray, chunk: int = 2048) -> np.ndarray:
  """3CosAdd answers: argmax_x cos(x, b - a + c) over unit rows, excluding a, b, c. abc: [N, 3]."""
  out = np.empty(len(abc), np.int64)
  for s in range(0, len(abc), chunk):
    q = abc[s : s + chunk]
    target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]
    scores = target @ unit.T
    np.put_along_axis(scores, q, -np.inf, axis=1)
    out[s : s + chunk] = scores.argmax(1)
  return out


def analogy(words, vectors, data_dir=None, path=None) -> dict:
  """Accuracy (semantic / syntactic / total) over in-vocabulary questions, and coverage."""
  sections = read_analogies(path or eval_file(ANALOGY_FILE, data_dir))
  index = {w: i for i, w in enumerate(words)}
  unit = unit_rows(vectors)
  correct, asked, total = {'semantic': 0, 'syntactic': 0}, {'semantic': 0, 'syntactic': 0}, 0
  for name, quads in sections:
    group = 'syntactic' if name.startswith('gram') else 'semantic'
    total += len(quads)
    known = np.asarray(
      [[index[w] for w in q] for q in quads if all(w in index for w in q)], np.int64
    ).reshape(-1, 4)
    if len(known):
      correct[group] += int((cos_add(unit, known[:, :3]) == known[:, 3]).sum())
      asked[group] += len(known)
  n = asked['semantic'] + asked['syntactic']
  acc = lambda c, a: c / a if a else float('nan')  # noqa: E731
  return {
    'analogy': acc(correct['semantic'] + correct['syntactic'], n),
    'analogy_semantic': acc(correct['semantic'], asked['semantic']),
    'analogy_syntactic': acc(correct['syntactic'], asked['syntactic']),
    'analogy_coverage': n / total if total else float('nan'),
    'analogy_questions': n,
  }


# ------------------------------------------------------------------ neighbours
def nearest(words, vectors, query: str, topn: int = 10) -> list[tuple[str, float]]:
  """The topn words by cosine similarity to `query` (itself excluded)."""
  index = {w: i for i, w in enumerate(words)}
  if query not in index:
    raise KeyError(f'{query!r} is not in the vocabulary ({len(words)} words).')
  unit = unit_rows(vectors)
  sims = unit @ unit[index[query]]
  sims[index[query]] = -np.inf
  best = np.argsort(-sims)[:topn]
  return [(words[i], float(sims[i])) for i in best]


# ------------------------------------------------------------------ word2vec text format
def save_word2vec_format(path, words, vectors, digits: int = 9) -> None:
  """Writes the text format atomically; words must not contain spaces, tabs or newlines.

  9 significant digits reproduce every float32 exactly (fewer give a smaller file).
  """
  vectors = np.asarray(vectors, np.float32)
  if len(words) != len(vectors):
    raise ValueError(f'{len(words)} words but {len(vectors)} vectors.')
  # Readers split lines on " " only (gensim too), so other Unicode spaces inside a word are fine.
  bad = next((w for w in words if not w or any(ch in w for ch in ' \t\n\r')), None)
  if bad is not None:
    raise ValueError(
      f'word {bad!r} is empty or holds a space, tab or newline; the word2vec text '
      'format cannot store it.'
    )
  row_format = ' '.join([f'%.{digits}g'] * vectors.shape[1]) + '\n'
  lines = [f'{len(words)} {vectors.shape[1]}\n']
  lines += [w + ' ' + row_format % tuple(v) for w, v in zip(words, vectors.tolist())]
  paths.write_atomic(path, ''.join(lines).encode('utf-8'))


def load_word2vec_format(path) -> tuple[list[str], np.ndarray]:
  """Reads the text format (header "V D"); errors name the file and line."""
  with open(path, encoding='utf-8') as f:
    header = f.readline().split()
    if len(header) != 2 or not all(h.isdigit() for h in header):
      raise ValueError(f"{path}:1: expected a 'V D' header, got {' '.join(header)!r}.")
    count, dim = map(int, header)
    words, vectors = [], np.empty((count, dim), np.float32)
    for lineno, line in enumerate(f, 2):
      parts = line.rstrip('\n').rstrip(' ').split(' ')
      if len(parts) != dim + 1 or len(words) >= count:
        raise ValueError(
          f'{path}:{lineno}: expected a word and {dim} numbers '
          f'({count} rows in all), got {len(parts)} fields.'
        )
      vectors[len(words)] = np.asarray(parts[1:], np.float32)
      words.append(parts[0])
  if len(words) != count:
    raise ValueError(f'{path}: header says {count} words, file has {len(words)}.')
  return words, vectors


def export_safe(word: str) -> str:
  """`word`, or its backslash-escaped form when the text format could not hold it (pieces like
  a lone tab); ordinary words pass unchanged."""
  if word and not any(ch in word for ch in ' \t\n\r'):
    return word
  return word.encode('unicode_escape').decode('ascii').replace(' ', '\\x20') or '<empty>'


def load_run(workdir) -> tuple[list[str], np.ndarray]:
  """(words, input vectors) of a train.word2vec run."""
  vocab = layout.vocab_path(workdir)
  if not os.path.exists(vocab):
    raise FileNotFoundError(f'{vocab} not found: is {workdir} a finished train.word2vec run?')
  with open(vocab, encoding='utf-8') as f:
    words = json.load(f)['words']
  return words, np.load(layout.embeddings_path(workdir))


# ------------------------------------------------------------------ CLI
def _define_flags():
  flags.DEFINE_string('workdir', None, 'a train.word2vec run directory')
  flags.DEFINE_string('vectors', None, 'or: a word2vec text-format file')
  flags.DEFINE_list('query', [], 'words whose nearest neighbours to print')
  flags.DEFINE_integer('topn', 10, 'neighbours per query')
  flags.DEFINE_bool('eval', False, 'print WordSim353 and analogy scores')


def main(argv):
  del argv
  f = flags.FLAGS
  if bool(f.workdir) == bool(f.vectors):
    raise app.UsageError('pass exactly one of --workdir or --vectors')
  words, vectors = load_run(f.workdir) if f.workdir else load_word2vec_format(f.vectors)
  for q in f.query:
    try:
      print(q + ': ' + ', '.join(f'{w} {s:.3f}' for w, s in nearest(words, vectors, q, f.topn)))
    except KeyError as e:
      print(f'{q}: {e.args[0]}')
  if f.eval:
    for k, v in {**wordsim(words, vectors), **analogy(words, vectors)}.items():
      print(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}')


if __name__ == '__main__':
  from train import cli  # pylint: disable=import-outside-toplevel

  cli.run(main, define_flags=_define_flags)

"""The literature's Multi30K text processing (lowercase, normalise, Moses-tokenize) via sacremoses.

Upstream `scripts/task1-tokenize.sh` made the official `tok/{split}.lc.norm.tok.{lang}` files as
`lowercase.perl | normalize-punctuation.perl -l L | tokenizer.perl -l L` (Moses scripts of December
2017: default escaping, so `'` -> `&apos;` and `&` -> `&amp;`; no aggressive hyphen splitting).
`process(line, lang)` reproduces those files line for line on every Multi30K split and language
(tests/eval/test_literature_metric.py). Two settings make sacremoses act like the Perl scripts:
- `perl_parity=True`: a `’` that is not between two ASCII letters becomes `"`, as in the Perl
  script (sacremoses' default makes it `'`): fr `coup d’œil` -> `coup d &quot; œil`.
- a newline appended before normalising: Perl reads each line with its `\\n`, so the de/fr rule
  `(\\.+)"(\\s*[^<])` ("don't fix period at end of sentence") still moves a final period behind a
  closing quote (`tea.“` -> `tea &quot; .`); sacremoses alone sees no character after the quote.
Without them 1 line of de val, 1 of fr val, 1 of fr test_2016_flickr, 7 of de train and 18 of fr
train differ from the official files.

Plain Python (no JAX): used by the data builder (`config.data.preprocess='lc_norm_tok'`) and by
`train.scoring` (the literature BLEU). The sacremoses objects are built once per language.
"""

from __future__ import annotations

import functools
from typing import Iterable

import sacremoses

VERSION = sacremoses.__version__
LANGS = ('en', 'de', 'fr', 'cs')  # languages whose processing is checked against the official files


@functools.lru_cache(maxsize=None)
def _tools(lang: str):
  """(normalizer, tokenizer, detokenizer) for `lang`; constructing them costs ~0.1 s each."""
  return (
    sacremoses.MosesPunctNormalizer(lang=lang, perl_parity=True),
    sacremoses.MosesTokenizer(lang=lang),
    sacremoses.MosesDetokenizer(lang=lang),
  )


def process(line: str, lang: str) -> str:
  """One raw line as the official `*.lc.norm.tok.{lang}` files have it (tokens joined by spaces)."""
  normalizer, tokenizer, _ = _tools(lang)
  text = normalizer.normalize(line.lower() + '\n')  # "\n": see the module docstring
  return tokenizer.tokenize(text, aggressive_dash_splits=False, return_str=True, escape=True)


def process_lines(lines: Iterable[str], lang: str) -> list[str]:
  return [process(line, lang) for line in lines]


def detokenize(line: str, lang: str) -> str:
  """Processed text back to readable text: Moses detokenization, `&apos;` etc. unescaped.

  Case is not restored: the result is lowercased text with normalised punctuation.
  """
  _, _, detokenizer = _tools(lang)
  return detokenizer.detokenize(line.split(), return_str=True, unescape=True)


def signature(lang: str) -> str:
  """Names the processing, for the literature BLEU's signature."""
  return f'lc+moses-norm+moses-tok(l={lang}, escape)|sacremoses:{VERSION}'

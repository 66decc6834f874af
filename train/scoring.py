"""Scoring and result files for evaluation: sacreBLEU/chrF, the literature's tokenized BLEU, exact
match, text I/O, the eval ledger.

Everything here is plain Python over strings and files (no JAX), so it is cheap to test and
reuse from `train.evaluate`, `train.translate` and `launch/`.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
from typing import Any, Iterable, Sequence

from absl import logging
from sacrebleu.metrics import BLEU, CHRF

from train import layout
from train.data import moses

LEDGER_NAME = layout.LEDGER_FILE


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _check_same_length(hypotheses: Sequence[str], references: Sequence[str]) -> None:
  if len(hypotheses) != len(references):
    raise ValueError(
      f'{len(hypotheses)} hypotheses but {len(references)} references: every hypothesis '
      'needs exactly one reference (do the source and reference files have equal lines?)'
    )


def literature_process(line: str, lang: str) -> str:
  """A raw line as Multi30K papers score it: lowercased, punctuation-normalised, Moses-tokenized
  (`&apos;`, `&amp;` escapes), exactly like the official `tok/*.lc.norm.tok.{lang}` files."""
  return moses.process(line, lang)


def literature_bleu(
  hypotheses: Sequence[str], references: Sequence[str], lang: str, *, processed: bool = False
) -> dict[str, Any]:
  """Corpus BLEU as multi-bleu.perl computes it on literature-processed text (Multi30K papers).

  `processed=False`: both sides are raw text and get `literature_process` here. `processed=True`:
  both already are processed text (a model trained with `data.preprocess='lc_norm_tok'` and its
  processed references); they are compared as they are (processing them again would turn
  `&apos;` into `&amp;apos;`). sacreBLEU then only splits on whitespace: no tokenizer, no
  lowercasing, no smoothing (multi-bleu.perl has none).
  """
  _check_same_length(hypotheses, references)
  hyps, refs = list(hypotheses), list(references)
  if not processed:
    hyps, refs = moses.process_lines(hyps, lang), moses.process_lines(refs, lang)
  bleu = BLEU(tokenize='none', lowercase=False, smooth_method='none', force=True)
  score = bleu.corpus_score(hyps, [refs])
  return {
    'bleu_lit': float(score.score),
    'bleu_lit_details': str(score),
    'bleu_lit_signature': f'{moses.signature(lang)}|{bleu.get_signature()}',
  }


def score_corpus(
  hypotheses: Sequence[str],
  references: Sequence[str],
  lang: str | None = None,
  *,
  processed: bool = False,
  raw_references: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Corpus BLEU (sacreBLEU defaults: 13a tokenizer, cased) and chrF, with their signatures; given
  the target language `lang`, also the literature's BLEU (`literature_bleu`: bleu_lit, ...).

  sacreBLEU needs detokenized text on both sides; it does its own tokenization, which is what
  makes the number comparable across papers. `processed=True` says hypotheses and references
  are literature-processed text: sacreBLEU then scores the Moses-detokenized hypotheses against
  `raw_references` (required; still cased, so lowercased hypotheses lose the case matches) and
  bleu_lit compares the processed texts directly. `lang=None` (lengthgen, no natural language)
  leaves the literature BLEU out.
  """
  _check_same_length(hypotheses, references)
  if not hypotheses:
    raise ValueError('cannot score an empty set of hypotheses')
  hyps, refs = list(hypotheses), list(references)
  if processed:
    if lang is None or raw_references is None:
      raise ValueError(
        'processed hypotheses need the target language and the raw references '
        '(sacreBLEU scores detokenized text against the raw text)'
      )
    _check_same_length(hypotheses, raw_references)
    hyps, refs = [moses.detokenize(h, lang) for h in hyps], list(raw_references)
  bleu, chrf = BLEU(), CHRF()
  bleu_score = bleu.corpus_score(hyps, [refs])
  chrf_score = chrf.corpus_score(hyps, [refs])
  result = {
    'bleu': float(bleu_score.score),
    'bleu_details': str(bleu_score),  # n-gram precisions, brevity penalty, lengths
    'chrf': float(chrf_score.score),
    'sacrebleu_signature': str(bleu.get_signature()),
    'chrf_signature': str(chrf.get_signature()),
  }
  if lang is not None:
    result.update(literature_bleu(hypotheses, references, lang, processed=processed))
  return result


def exact_match(
  hypotheses: Sequence[str], references: Sequence[str], lengths: Sequence[int] | None = None
) -> dict[str, Any]:
  """Fraction of hypotheses equal to their reference (stripped), overall and per length.

  `lengths` (e.g. the lengthgen task length of each example) groups the accuracy; keys of
  `exact_match_by_length` are the lengths as strings so the dict survives a JSON round trip.
  """
  _check_same_length(hypotheses, references)
  hits = [h.strip() == r.strip() for h, r in zip(hypotheses, references)]
  out: dict[str, Any] = {'exact_match': sum(hits) / max(len(hits), 1)}
  if lengths is not None:
    if len(lengths) != len(hits):
      raise ValueError(f'{len(lengths)} lengths for {len(hits)} hypotheses')
    groups: dict[int, list[bool]] = collections.defaultdict(list)
    for length, hit in zip(lengths, hits):
      groups[int(length)].append(hit)
    out['exact_match_by_length'] = {
      str(k): {'accuracy': sum(v) / len(v), 'count': len(v)} for k, v in sorted(groups.items())
    }
  return out


# ---------------------------------------------------------------------------------------------
# Text files
# ---------------------------------------------------------------------------------------------
def decode_lines(
  raw_lines: Iterable[bytes], name: str, *, bad_utf8: str = 'error'
) -> list[str | None]:
  """Byte lines -> text without line endings (LF or CRLF). A line that is not UTF-8 raises a
  ValueError naming `name` and the line, or with bad_utf8="skip" becomes None, with a warning."""
  lines: list[str | None] = []
  for lineno, raw in enumerate(raw_lines, start=1):
    try:
      lines.append(raw.decode('utf-8').rstrip('\r\n'))
    except UnicodeDecodeError as e:
      where = f'{name}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})'
      if bad_utf8 != 'skip':
        raise ValueError(f'{where}; convert the file to UTF-8 (e.g. with iconv)') from None
      logging.warning('%s: skipped; its output line is left empty', where)
      lines.append(None)
  return lines


def read_lines(path: str, *, bad_utf8: str = 'error') -> list[str | None]:
  """Lines of a UTF-8 text file, plain or gzip (by the `.gz` suffix), without line endings
  (see `decode_lines` for `bad_utf8`)."""
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      return decode_lines(f, path, bad_utf8=bad_utf8)
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no such file') from None
  except IsADirectoryError:
    raise IsADirectoryError(f'{path}: is a directory, not a text file') from None
  except (gzip.BadGzipFile, EOFError) as e:
    raise ValueError(
      f'{path}: not a readable gzip file ({e}); '
      'decompress it, or drop the .gz suffix if it is plain text'
    ) from None


def read_parallel(
  source_path: str, reference_path: str | None
) -> tuple[list[str], list[str] | None]:
  """Source lines and (optionally) reference lines, checked to align line by line."""
  sources = read_lines(source_path)
  if reference_path is None:
    return sources, None
  references = read_lines(reference_path)
  if len(sources) != len(references):
    shorter = source_path if len(sources) < len(references) else reference_path
    raise ValueError(
      f'{source_path} has {len(sources)} lines but {reference_path} has '
      f'{len(references)}: '
      f'line {min(len(sources), len(references)) + 1} has no partner in {shorter}. '
      'Line N of the reference must translate line N of the source.'
    )
  return sources, references


# Indented, sorted JSON, atomically (a reader never sees a half-written file).
write_json = layout.write_json


def write_lines(path: str, lines: Iterable[str]) -> None:
  """One string per line, atomically; newlines inside a string become spaces to keep alignment."""
  layout.write_text(path, ''.join(' '.join(line.splitlines()) + '\n' for line in lines))


# ---------------------------------------------------------------------------------------------
# Ledger: which (evaluation, step) pairs are done, so `--checkpoint=all` can skip them
# ---------------------------------------------------------------------------------------------
def load_ledger(eval_dir: str) -> dict[str, dict[str, str]]:
  """`{evaluation key: {step as str: results path}}`; empty when nothing was evaluated yet."""
  path = os.path.join(eval_dir, LEDGER_NAME)
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      ledger = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(
      f'{path}:{e.lineno}: corrupt evaluation ledger ({e.msg}); '
      'delete it to re-evaluate every checkpoint'
    ) from None
  return ledger.get('evaluations', {})


def record_in_ledger(eval_dir: str, key: str, step: int, results_path: str) -> None:
  """Mark `step` as evaluated under `key` (re-reads the ledger first, then replaces it)."""
  ledger = load_ledger(eval_dir)
  ledger.setdefault(key, {})[str(int(step))] = os.path.relpath(results_path, eval_dir)
  write_json(os.path.join(eval_dir, LEDGER_NAME), {'evaluations': ledger})


def pending_steps(steps: Iterable[int], ledger: dict[str, dict[str, str]], key: str) -> list[int]:
  """The steps, ascending, that the ledger has no entry for under `key`."""
  done = ledger.get(key, {})
  return sorted(int(s) for s in steps if str(int(s)) not in done)

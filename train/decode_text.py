"""Text in, text out: decode settings, batches of text, translation with a model, and scoring.

The library half of evaluation, shared by train.evaluate (checkpoints), train.translate (files),
the training loop's validation (`decode_and_score`) and launch.plots. Text the model reads and
writes is processed like its training data (`model_text`, `readable`: data.preprocess), and
`score` reports sacreBLEU (cased, 13a, detokenized) and, for Multi30K, the literature's BLEU.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from model import decoding
from model.vocab import BOS, EOS
from configs import common
from train import data
from train import scoring
from train.data import moses

# Inputs the decoder needs (targets, index, ... are not passed).
_DECODE_KEYS = ('inputs', 'inputs_position', 'inputs_segment')


# ---------------------------------------------------------------------------------------------
# Decode settings
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  method: str = 'beam'
  beam_size: int = 4
  alpha: float = 0.6
  max_len_margin: int = 50

  def __post_init__(self):
    if self.method not in ('beam', 'greedy'):
      raise ValueError(f"decode={self.method!r}: choose one of 'beam', 'greedy'")
    if self.method == 'beam' and self.beam_size < 1:
      raise ValueError(f'beam_size={self.beam_size}: must be >= 1')

  @property
  def tag(self) -> str:
    """Short name used in the ledger and in non-default result file names."""
    if self.method == 'greedy':
      return 'greedy'
    return f'beam{self.beam_size}-a{self.alpha:g}'

  def as_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    if self.method == 'greedy':
      d.pop('beam_size'), d.pop('alpha')
    return d


def eval_option(config, key: str):
  """config.eval[key], or base_config's default when the config predates the key
  (configs.common.opt: configs/common.py is the one place defaults live)."""
  return common.opt(config.get('eval', None), key, section='eval')


def settings_from_config(config, decode=None, beam_size=None, alpha=None) -> DecodeSettings:
  """`config.eval` settings, overridden by any argument that is not None."""
  pick = lambda given, key: given if given is not None else eval_option(config, key)
  return DecodeSettings(
    method=pick(decode, 'decode'),
    beam_size=int(pick(beam_size, 'beam_size')),
    alpha=float(pick(alpha, 'alpha')),
    max_len_margin=int(eval_option(config, 'max_len_margin')),
  )


# ---------------------------------------------------------------------------------------------
# Batches from raw text (for --source_file and train.translate); splits use train.data
# ---------------------------------------------------------------------------------------------
def _pad_to(n: int, multiple: int = 8) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def text_batches(
  tokenizer,
  sources: Sequence[str],
  references: Sequence[str] | None,
  *,
  arch: str,
  batch_size: int,
  max_src_len: int,
  max_tgt_len: int,
) -> list[dict[str, np.ndarray]]:
  """Batches in the contracts.md layout for raw sentences, sorted by length, `index` = line.

  Sources longer than `max_src_len` (with EOS) are truncated: the model never saw longer
  inputs. Every batch is padded to the same widths so decoding compiles once.
  """
  src_ids = [tokenizer.encode(s, side='source')[: max_src_len - 1] + [EOS] for s in sources]
  tgt_ids = None
  if references is not None:
    tgt_ids = [tokenizer.encode(r, side='target')[: max_tgt_len - 1] + [EOS] for r in references]
  order = sorted(range(len(sources)), key=lambda i: len(src_ids[i]))
  if arch == 'decoder_only' and tgt_ids is not None:
    seqs = [src_ids[i] + tgt_ids[i] for i in range(len(sources))]
    width_t = _pad_to(max((len(s) for s in seqs), default=1))
  elif tgt_ids is not None:
    width_t = _pad_to(max((len(t) for t in tgt_ids), default=1))
  width_s = _pad_to(max((len(s) for s in src_ids), default=1))
  batches = []
  for start in range(0, len(order), batch_size):
    rows = order[start : start + batch_size]
    b = {
      k: np.zeros((batch_size, width_s), np.int32)
      for k in ('inputs', 'inputs_position', 'inputs_segment')
    }
    b['index'] = np.full((batch_size,), -1, np.int32)
    if tgt_ids is not None:
      for k in ('decoder_inputs', 'targets', 'targets_segment', 'targets_position'):
        b[k] = np.zeros((batch_size, width_t), np.int32)
      b['weights'] = np.zeros((batch_size, width_t), np.float32)
    for r, i in enumerate(rows):
      n = len(src_ids[i])
      b['inputs'][r, :n] = src_ids[i]
      b['inputs_position'][r, :n] = np.arange(n)
      b['inputs_segment'][r, :n] = 1
      b['index'][r] = i
      if tgt_ids is None:
        continue
      if arch == 'decoder_only':  # x = src + [eos] + y + [eos]; loss only on y + [eos]
        x, first = src_ids[i] + tgt_ids[i], n
      else:
        x, first = tgt_ids[i], 0
      m = len(x)
      b['targets'][r, :m] = x
      b['decoder_inputs'][r, :m] = [BOS] + x[:-1]
      b['targets_segment'][r, :m] = 1
      b['targets_position'][r, :m] = np.arange(m)
      b['weights'][r, first:m] = 1.0
    batches.append(b)
  return batches


# ---------------------------------------------------------------------------------------------
# Decoding (model.decoding.generate compiles one search per module, setting and batch width and
# caches it, so repeated calls from the training loop and across checkpoints reuse it)
# ---------------------------------------------------------------------------------------------
def translate_batches(
  module, params, batches, tokenizer, settings: DecodeSettings
) -> dict[int, str]:
  """`{original index: hypothesis text}` for every real row of `batches`."""
  kwargs = dict(method=settings.method, max_len_margin=settings.max_len_margin)
  if settings.method == 'beam':
    kwargs.update(beam_size=settings.beam_size, alpha=settings.alpha)
  out: dict[int, str] = {}
  for batch in batches:
    inputs = {k: batch[k] for k in _DECODE_KEYS if k in batch}
    tokens = np.asarray(decoding.generate(module, params, inputs, **kwargs))
    for row, index in zip(tokens, np.asarray(batch['index'])):
      if index >= 0:
        out[int(index)] = tokenizer.decode([int(t) for t in row], side='target')
  return out


# ---------------------------------------------------------------------------------------------
# Scoring a split (also called by the training loop on a validation subset)
# ---------------------------------------------------------------------------------------------
_SPLIT_CACHE: dict[tuple, tuple[list[dict], list[dict]]] = {}


def _split_data(config, tokenizer, split, max_sentences, batch_size):
  key = (config.data.to_json(), id(tokenizer), split, max_sentences, batch_size)
  if key not in _SPLIT_CACHE:
    examples = data.load_examples(config, split)
    batches = data.make_eval_batches(
      config, tokenizer, split, batch_size=batch_size, max_examples=max_sentences
    )
    _SPLIT_CACHE.clear()  # keep one split's data; training alternates between few
    _SPLIT_CACHE[key] = (examples, batches)
  return _SPLIT_CACHE[key]


def target_text(config) -> dict[str, Any]:
  """How a config's hypotheses are scored: `lang`, the target language of the literature BLEU
  (None unless multi30k), and `processed`, whether the model reads and writes literature-processed
  text (`data.preprocess='lc_norm_tok'`; absent in older configs = raw)."""
  d = config.data
  if (d.get('name', None) or 'multi30k') != 'multi30k':
    return {'lang': None, 'processed': False}
  return {
    'lang': d.get('tgt', None) or 'de',
    'processed': (d.get('preprocess', None) or 'raw') != 'raw',
  }


def model_text(config, lines: Sequence[str], side: str) -> list[str]:
  """Raw lines (a --source_file, train.translate's input) as the model reads them: processed
  like its training data for a `data.preprocess='lc_norm_tok'` model, else unchanged."""
  if not target_text(config)['processed']:
    return list(lines)
  return moses.process_lines(lines, config.data.src if side == 'source' else config.data.tgt)


def readable(config, hypotheses: Sequence[str]) -> list[str]:
  """Hypotheses as text for people: a processed-text model's output Moses-detokenized
  (lowercase stays), others unchanged."""
  t = target_text(config)
  if not t['processed']:
    return list(hypotheses)
  return [moses.detokenize(h, t['lang']) for h in hypotheses]


def score(
  hypotheses: dict[int, str],
  examples_by_index: dict[int, dict],
  tokenizer=None,
  *,
  lang: str | None = None,
  processed: bool = False,
) -> dict[str, Any]:
  """BLEU/chrF in index order (+ the literature BLEU given the target `lang`; `processed`: the
  hypotheses and `target`s are literature-processed text and examples carry `target_raw`, see
  scoring.score_corpus); for lengthgen (examples carry `length`) also exact match per task
  length and, given the tokenizer, per target length in tokens."""
  indices = sorted(hypotheses)
  hyps = [hypotheses[i] for i in indices]
  refs = [examples_by_index[i]['target'] for i in indices]
  raw_refs = None
  if processed:
    raw_refs = [examples_by_index[i].get('target_raw') for i in indices]
    if None in raw_refs:
      raise ValueError(
        "a processed-text model's examples need their raw reference "
        '(target_raw) for sacreBLEU; rebuild the dataset (train.data.prepare)'
      )
  result = scoring.score_corpus(hyps, refs, lang, processed=processed, raw_references=raw_refs)
  if indices and 'length' in examples_by_index[indices[0]]:
    lengths = [examples_by_index[i]['length'] for i in indices]
    result.update(scoring.exact_match(hyps, refs, lengths))
    if tokenizer is not None:
      target_lengths = [len(tokenizer.encode(r, side='target')) for r in refs]
      by_target = scoring.exact_match(hyps, refs, target_lengths)['exact_match_by_length']
      result['exact_match_by_target_length'] = by_target
  result.update(num_sentences=len(indices), indices=indices, hypotheses=hyps)
  return result


def decode_and_score(
  config,
  module,
  params,
  tokenizer,
  split,
  *,
  max_sentences=None,
  decode=None,
  beam_size=None,
  alpha=None,
) -> dict[str, Any]:
  """Decode `split` (its first `max_sentences` examples) and score against the references.

  Returns bleu, chrf, sacrebleu_signature, hypotheses (in original order), indices,
  num_sentences, decode settings, seconds; bleu_lit[_details, _signature] for multi30k;
  exact_match[_by_length] for lengthgen.
  """
  start = time.time()
  settings = settings_from_config(config, decode, beam_size, alpha)
  batch_size = int(eval_option(config, 'batch_size'))
  examples, batches = _split_data(config, tokenizer, split, max_sentences, batch_size)
  hypotheses = translate_batches(module, params, batches, tokenizer, settings)
  result = score(
    hypotheses, {int(e['index']): e for e in examples}, tokenizer, **target_text(config)
  )
  result.update(split=split, decode=settings.as_dict(), seconds=time.time() - start)
  return result

"""Evaluate checkpoints: decode a split or any text file, score with sacreBLEU, write results JSON.

    python -m train.evaluate --workdir=DIR --checkpoint=latest|best|all|STEP|avg_last:N \
        [--split=NAME | --source_file=F [--reference_file=F]] [--decode=beam|greedy] \
        [--beam_size=4] [--alpha=0.6] [--output=FILE] [--show=N]

Results go to `DIR/eval/{split}-{step}.json` (BLEU and chrF with sacreBLEU's signature, the
token-level loss from `train.trainer.eval_loss`, decode settings, timings; for lengthgen,
exact-match accuracy overall, per task length and per target length in tokens) and the hypotheses, one per line in the original order, to
`DIR/eval/{split}-{step}.hyp.txt`. `--checkpoint=all` evaluates every checkpoint that
`DIR/eval/ledger.json` does not list yet for this split and decode setting.
`--checkpoint=avg_last:N` evaluates the element-wise mean of the N newest checkpoints' params
(train/averaging.py; cached in `DIR/averaged/`) and writes `DIR/eval/{split}-avg{N}@{last}.json`
(+ `.hyp.txt`), which records the averaged steps; the ledger is not touched.
Multi30K results also carry the literature's BLEU (`bleu_lit`: lowercased, Moses-tokenized text,
as multi-bleu.perl scores it; train/scoring.py). A `data.preprocess='lc_norm_tok'` model reads and
writes processed text: `--source_file`/`--reference_file` are raw text and get processed like its
training data, `.hyp.txt` holds its processed output, sacreBLEU scores that output detokenized.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

from absl import logging
import numpy as np

import model
from model import decoding
from model.vocab import BOS, EOS
from train import averaging
from train import checkpointing
from train import cli
from train import config_io
from train import data
from train import layout
from train import runtime
from train import scoring
from train import trainer
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


def settings_from_config(config, decode=None, beam_size=None, alpha=None) -> DecodeSettings:
  """`config.eval` defaults, overridden by any argument that is not None."""
  ev = config.get('eval', {}) or {}
  return DecodeSettings(
    method=decode if decode is not None else ev.get('decode', 'beam'),
    beam_size=int(beam_size if beam_size is not None else ev.get('beam_size', 4)),
    alpha=float(alpha if alpha is not None else ev.get('alpha', 0.6)),
    max_len_margin=int(ev.get('max_len_margin', 50)),
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
  batch_size = int(config.get('eval', {}).get('batch_size', 0) or 0) or None
  examples, batches = _split_data(config, tokenizer, split, max_sentences, batch_size)
  hypotheses = translate_batches(module, params, batches, tokenizer, settings)
  result = score(
    hypotheses, {int(e['index']): e for e in examples}, tokenizer, **target_text(config)
  )
  result.update(split=split, decode=settings.as_dict(), seconds=time.time() - start)
  return result


# ---------------------------------------------------------------------------------------------
# Workdir: config, tokenizer, model, checkpoints
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Loaded:
  config: Any
  module: Any
  tokenizer: Any


def load_workdir(workdir: str) -> Loaded:
  """Resolved config, tokenizer and model module of a training workdir."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir={workdir}: no such directory')
  config = config_io.load_config(workdir)
  tokenizer = data.load_tokenizer(os.path.join(workdir, 'tokenizer'))
  if not config.model.get('vocab_size'):
    with config.unlocked():
      config.model.vocab_size = tokenizer.vocab_size
  return Loaded(config, model.build_model(config.model), tokenizer)


def resolve_steps(workdir: str, which: str) -> list[int]:
  """Checkpoint steps for `latest | best | all | STEP` (ascending)."""
  steps = sorted(int(s) for s in checkpointing.list_steps(workdir))
  if not steps:
    raise FileNotFoundError(
      f'{workdir}/checkpoints: no checkpoints; train first '
      f'(python -m train.main --workdir={workdir} --config=...)'
    )
  if which == 'latest':
    return steps[-1:]
  if which == 'all':
    return steps
  if which == 'best':
    best = checkpointing.best_step(workdir)
    if best is None:
      raise ValueError(
        f'{workdir}: no best checkpoint recorded (no validation metric was '
        'saved); use --checkpoint=latest or a step'
      )
    return [int(best)]
  try:
    step = int(which)
  except ValueError:
    raise ValueError(
      f'--checkpoint={which!r}: use latest, best, all or a step number, or avg_last:N'
    ) from None
  if step not in steps:
    raise ValueError(
      f'--checkpoint={step}: no such checkpoint in {workdir}; available steps: {steps}'
    )
  return [step]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """What one evaluation loads: a checkpoint step, or the mean of several (avg_last:N)."""

  step: int  # the checkpoint's step; for an average, its newest step
  averaged: tuple[int, ...] = ()  # the steps averaged; empty for a plain checkpoint

  @property
  def label(self) -> str:
    """The step in result file names: '700', or 'avg10@700' for an average ending at 700."""
    return layout.step_label(self.step, len(self.averaged))


def resolve_checkpoints(workdir: str, which: str) -> list[Checkpoint]:
  """`resolve_steps`, plus `avg_last:N`: one Checkpoint averaging the N newest steps."""
  n = averaging.parse(which)
  if n is None:
    return [Checkpoint(step) for step in resolve_steps(workdir, which)]
  steps = averaging.last_steps(workdir, n)
  return [Checkpoint(steps[-1], tuple(steps))]


def load_params(workdir: str, checkpoint: Checkpoint, config=None):
  """Host-local params of `checkpoint` (an average is computed once, then read from disk)."""
  if checkpoint.averaged:
    return averaging.averaged_params(workdir, checkpoint.averaged, config)
  return checkpointing.restore_params(workdir, checkpoint.step, config)


def _candidates(workdir: str, which: str) -> list[Checkpoint]:
  """The checkpoints `which` may fall back to, in order: `latest` newest first, `best` by
  score (then newest first among unscored), anything else just itself."""
  if which not in ('latest', 'best'):
    return resolve_checkpoints(workdir, which)
  first = resolve_steps(workdir, which)[0]
  steps = sorted(checkpointing.list_steps(workdir), reverse=True)
  if which == 'best':
    scores = checkpointing.step_scores(workdir)
    steps = sorted(steps, key=lambda s: (scores.get(s) is None, -(scores.get(s) or 0), -s))
  return [Checkpoint(first)] + [Checkpoint(s) for s in steps if s != first]


def restorable_steps(workdir: str, config=None) -> list[int]:
  """Steps whose params restore (each one is read: for error messages, not hot paths)."""
  good = []
  for step in checkpointing.list_steps(workdir):
    try:
      checkpointing.restore_params(workdir, step, config)
      good.append(step)
    except checkpointing.CheckpointUnreadable:
      pass
  return good


def load_checkpoint(workdir: str, which: str, config=None) -> tuple[Checkpoint, Any]:
  """(checkpoint, params) for latest | best | STEP | avg_last:N. A `latest` or `best` that
  fails to restore is reported in one line and the next candidate is used, as train.main does;
  an explicit STEP that fails is an error naming the steps that do restore."""
  candidates = _candidates(workdir, which)
  for i, ckpt in enumerate(candidates):
    try:
      return ckpt, load_params(workdir, ckpt, config)
    except checkpointing.CheckpointUnreadable as e:
      if which not in ('latest', 'best'):
        good = [s for s in restorable_steps(workdir, config) if s != e.step]
        raise checkpointing.CheckpointUnreadable(e.step, workdir, e.cause, good) from None
      if i + 1 < len(candidates):
        logging.warning(
          '%s; using step %d instead (--checkpoint=%s)', e, candidates[i + 1].step, which
        )
  raise FileNotFoundError(
    f'{workdir}: no checkpoint restores (tried steps '
    f'{[c.step for c in candidates]}); retrain or restore the files'
  )


def _results_paths(workdir, name, step, settings, default_settings, output, averaged=0):
  """(results JSON, hypotheses file) of `step` (or the mean of `averaged` checkpoints ending
  there). Non-default decode settings get their own file name."""
  if output:
    json_path = output.format(step=layout.step_label(step, averaged), split=name)
  else:
    tag = '' if settings == default_settings else settings.tag
    json_path = layout.results_path(workdir, name, step, averaged=averaged, tag=tag)
  return json_path, layout.hypotheses_path(json_path)


def _loss(loaded: Loaded, params, batches) -> dict[str, float]:
  out = trainer.eval_loss(loaded.module, params, batches, loaded.config)
  return {
    'loss': float(out['loss']),
    'loss_tokens': float(out['tokens']),
    'token_accuracy': float(out['accuracy']),
  }


def evaluate_step(
  loaded: Loaded,
  workdir: str,
  step: int,
  params,
  *,
  split=None,
  source_file=None,
  reference_file=None,
  settings: DecodeSettings,
  output=None,
  show: int = 0,
  averaged: Sequence[int] = (),
) -> dict[str, Any]:
  """Evaluate one checkpoint (`params` of `step`, or the mean of the `averaged` steps);
  write hypotheses (and results JSON when references exist)."""
  config, start = loaded.config, time.time()
  batch_size = int(config.get('eval', {}).get('batch_size', 0) or 0) or None
  if source_file:
    name = os.path.basename(source_file).removesuffix('.gz')
    sources, references = scoring.read_parallel(source_file, reference_file)
    if not sources:
      raise ValueError(f'{source_file}: the file is empty; nothing to translate or score')
    model_refs = model_text(config, references, 'target') if references else None
    batches = text_batches(
      loaded.tokenizer,
      model_text(config, sources, 'source'),
      model_refs,
      arch=config.model.get('arch', 'encoder_decoder'),
      batch_size=batch_size or 32,
      max_src_len=config.data.max_src_len,
      max_tgt_len=config.data.max_tgt_len,
    )
    examples = {
      i: {
        'source': s,
        'target': model_refs[i] if references else None,
        'target_raw': references[i] if references else None,
      }
      for i, s in enumerate(sources)
    }
  else:
    name = split
    batches = data.make_eval_batches(config, loaded.tokenizer, split, batch_size=batch_size)
    examples = {int(e['index']): e for e in data.load_examples(config, split)}
  hypotheses = translate_batches(loaded.module, params, batches, loaded.tokenizer, settings)
  decode_seconds = time.time() - start
  default = settings_from_config(config)
  json_path, hyp_path = _results_paths(
    workdir, name, int(step), settings, default, output, averaged=len(averaged)
  )
  scoring.write_lines(hyp_path, [hypotheses[i] for i in sorted(hypotheses)])
  if source_file and reference_file is None:
    result = {
      'hypotheses_file': hyp_path,
      'num_sentences': len(hypotheses),
      'step': step,
      'split': name,
      'indices': sorted(hypotheses),
      'hypotheses': [hypotheses[i] for i in sorted(hypotheses)],
    }
    _print_examples(result, examples, show)
    return result
  result = score(hypotheses, examples, loaded.tokenizer, **target_text(config))
  result.update(_loss(loaded, params, batches))
  result.update(
    step=int(step),
    split=name,
    workdir=os.path.abspath(workdir),
    decode=settings.as_dict(),
    decode_seconds=decode_seconds,
    seconds=time.time() - start,
    hypotheses_file=hyp_path,
    source_file=source_file,
    reference_file=reference_file,
  )
  if averaged:
    result.update(
      checkpoint=f'{averaging.PREFIX}{len(averaged)}', averaged_steps=[int(s) for s in averaged]
    )
  record = {k: v for k, v in result.items() if k not in ('hypotheses', 'indices')}
  scoring.write_json(json_path, record)
  result['results_file'] = json_path
  _print_examples(result, examples, show)
  return result


def _print_examples(result: dict[str, Any], examples: dict[int, dict], n: int) -> None:
  """First `n` source / reference / hypothesis triples (original order) and the BLEU line."""
  for i, hyp in list(zip(result['indices'], result['hypotheses']))[:n]:
    print(f'SRC: {examples[i]["source"]}')
    if examples[i].get('target') is not None:
      print(f'REF: {examples[i]["target"]}')
    print(f'HYP: {hyp}\n')
  if 'bleu' in result:
    which = (
      f'mean of steps {result["averaged_steps"]}'
      if result.get('averaged_steps')
      else f'step {result["step"]}'
    )
    print(
      f'{result["split"]} {which}: BLEU = {result["bleu"]:.2f}  '
      f'chrF = {result["chrf"]:.2f}  loss = {result["loss"]:.4f}  '
      f'({result["num_sentences"]} sentences, {result["decode"]["method"]})'
    )
    print(f'  {result["bleu_details"]}')
    print(f'  sacreBLEU signature: {result["sacrebleu_signature"]}')
  if 'bleu_lit' in result:
    print(
      f'  literature BLEU (lowercased, Moses-tokenized) = {result["bleu_lit"]:.2f}  '
      f'{result["bleu_lit_details"]}'
    )
    print(f'  its signature: {result["bleu_lit_signature"]}')


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def run(
  workdir: str,
  checkpoint: str = 'latest',
  *,
  split=None,
  source_file=None,
  reference_file=None,
  decode=None,
  beam_size=None,
  alpha=None,
  output=None,
  show: int = 0,
) -> list[dict[str, Any]]:
  """Evaluate the chosen checkpoint(s); returns one result dict per evaluated step."""
  if split and source_file:
    raise ValueError('give either --split or --source_file (with --reference_file), not both')
  if reference_file and not source_file:
    raise ValueError('--reference_file needs --source_file')
  if (
    checkpoint not in ('latest', 'best', 'all')
    and not checkpoint.isdigit()
    and averaging.parse(checkpoint) is None
  ):
    raise ValueError(
      f'--checkpoint={checkpoint!r}: use latest, best, all or a step number, or avg_last:N'
    )
  loaded = load_workdir(workdir)
  config = loaded.config
  if not source_file and not split:
    split = list(config.data.get('eval_splits') or ['val'])[0]
  settings = settings_from_config(config, decode, beam_size, alpha)
  checkpoints = resolve_checkpoints(workdir, checkpoint)
  if output and len(checkpoints) > 1 and '{step}' not in output:
    raise ValueError(
      f'--output={output}: several checkpoints would overwrite one file; '
      'put {step} in the name, e.g. --output=out/val-{step}.json'
    )
  eval_dir = layout.eval_dir(workdir)
  name = split or os.path.basename(source_file).removesuffix('.gz')
  ledger_key = f'{name}:{settings.tag}'
  if checkpoint == 'all':
    steps = scoring.pending_steps(
      [c.step for c in checkpoints], scoring.load_ledger(eval_dir), ledger_key
    )
    print(f'{len(steps)} checkpoint(s) to evaluate on {name}: {steps}')
    checkpoints = [Checkpoint(step) for step in steps]
  results = []
  for ckpt in checkpoints:
    if checkpoint == 'all':
      try:
        params = load_params(workdir, ckpt, config)
      except checkpointing.CheckpointUnreadable as e:
        logging.warning('%s; skipped (--checkpoint=all goes on with the others)', e)
        continue
      except FileNotFoundError:  # a training run still writing here deleted it (keep_checkpoints)
        logging.warning(
          'checkpoint %d of %s was deleted while evaluating (the training run '
          'keeps only its newest checkpoints); skipped',
          ckpt.step,
          workdir,
        )
        continue
    else:
      ckpt, params = load_checkpoint(workdir, checkpoint, config)
    result = evaluate_step(
      loaded,
      workdir,
      ckpt.step,
      params,
      split=split,
      source_file=source_file,
      reference_file=reference_file,
      settings=settings,
      output=output,
      show=show,
      averaged=ckpt.averaged,
    )
    if 'results_file' in result:
      if not ckpt.averaged:  # the ledger tracks single checkpoints, for --checkpoint=all
        scoring.record_in_ledger(eval_dir, ledger_key, ckpt.step, result['results_file'])
      print(f'wrote {result["results_file"]} and {result["hypotheses_file"]}')
    else:
      print(f'wrote {result["hypotheses_file"]} (no reference, so no scores)')
    results.append(result)
  return results


def _define_flags():
  # Defined only when run as a program: train.loop imports this module for decode_and_score.
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string('workdir', None, 'Training workdir (config.json, checkpoints/).')
  flags.DEFINE_string(
    'checkpoint', 'latest', 'latest | best | all | STEP | avg_last:N (mean of the N newest).'
  )
  flags.DEFINE_string('split', None, 'Split name (default: first of config.data.eval_splits).')
  flags.DEFINE_string('source_file', None, 'Plain or .gz text to translate, one per line.')
  flags.DEFINE_string('reference_file', None, 'References aligned with --source_file.')
  flags.DEFINE_enum('decode', None, ['beam', 'greedy'], 'Default: config.eval.decode.')
  flags.DEFINE_integer('beam_size', None, 'Default: config.eval.beam_size.')
  flags.DEFINE_float('alpha', None, 'Beam length penalty; default: config.eval.alpha.')
  flags.DEFINE_string(
    'output', None, 'Results JSON path ({step}, {split} allowed); default DIR/eval/...'
  )
  flags.DEFINE_integer('show', 0, 'Print this many source/reference/hypothesis triples.')


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel

  if len(argv) > 1:
    raise cli.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.setup_runtime()  # same persistent compile cache: sweeps' evaluations reuse decoders
  f = flags.FLAGS
  run(
    f.workdir,
    f.checkpoint,
    split=f.split,
    source_file=f.source_file,
    reference_file=f.reference_file,
    decode=f.decode,
    beam_size=f.beam_size,
    alpha=f.alpha,
    output=f.output,
    show=f.show,
  )


if __name__ == '__main__':
  cli.run(main, define_flags=_define_flags, required=('workdir',))

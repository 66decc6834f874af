"""Evaluate checkpoints: decode a split or any text file, score with sacreBLEU, write results JSON.

    python -m train.evaluate --workdir=DIR --checkpoint=latest|best|all|STEP|avg_last:N \
        [--split=NAME | --source_file=F [--reference_file=F]] [--decode=beam|greedy] \
        [--beam_size=4] [--alpha=0.6] [--output=FILE] [--show=N]

Results go to `DIR/eval/{split}-{step}.json` (BLEU and chrF with sacreBLEU's signature, the
token-level loss from `train.trainer.eval_loss`, decode settings, timings; for lengthgen,
exact-match accuracy overall, per task length and per target length in tokens) and the hypotheses,
one per line in the original order, to `DIR/eval/{split}-{step}.hyp.txt`. `--checkpoint=all`
evaluates every checkpoint that `DIR/eval/ledger.json` does not list yet for this split and decode
setting.
`--checkpoint=avg_last:N` evaluates the element-wise mean of the N newest checkpoints' params
(train/averaging.py; cached in `DIR/averaged/`) and writes `DIR/eval/{split}-avg{N}@{last}.json`
(+ `.hyp.txt`), which records the averaged steps; the ledger is not touched.
Multi30K results also carry the literature's BLEU (`bleu_lit`: lowercased, Moses-tokenized text,
as multi-bleu.perl scores it; train/scoring.py). A `data.preprocess='lc_norm_tok'` model reads and
writes processed text: `--source_file`/`--reference_file` are raw text and get processed like its
training data, `.hyp.txt` holds its processed output, sacreBLEU scores that output detokenized.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from absl import logging

from train import averaging
from train import checkpointing
from train import cli
from train import data
from train import decode_text
from train import layout
from train import restore
from train import runtime
from train import scoring
from train import trainer


def _results_paths(workdir, name, step, settings, default_settings, output, averaged=0):
  """(results JSON, hypotheses file) of `step` (or the mean of `averaged` checkpoints ending
  there). Non-default decode settings get their own file name."""
  if output:
    json_path = output.format(step=layout.step_label(step, averaged), split=name)
  else:
    tag = '' if settings == default_settings else settings.tag
    json_path = layout.results_path(workdir, name, step, averaged=averaged, tag=tag)
  return json_path, layout.hypotheses_path(json_path)


def _loss(loaded: restore.Loaded, params, batches) -> dict[str, float]:
  out = trainer.eval_loss(loaded.module, params, batches, loaded.config)
  return {
    'loss': float(out['loss']),
    'loss_tokens': float(out['tokens']),
    'token_accuracy': float(out['accuracy']),
  }


def _file_batches(config, tokenizer, source_file, reference_file, batch_size):
  """(batches, examples by index) for a parallel text file pair (references optional)."""
  sources, references = scoring.read_parallel(source_file, reference_file)
  if not sources:
    raise ValueError(f'{source_file}: the file is empty; nothing to translate or score')
  model_refs = decode_text.model_text(config, references, 'target') if references else None
  batches = decode_text.text_batches(
    tokenizer,
    decode_text.model_text(config, sources, 'source'),
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
  return batches, examples


def evaluate_step(
  loaded: restore.Loaded,
  workdir: str,
  step: int,
  params,
  *,
  split=None,
  source_file=None,
  reference_file=None,
  settings: decode_text.DecodeSettings,
  output=None,
  show: int = 0,
  averaged: Sequence[int] = (),
) -> dict[str, Any]:
  """Evaluate one checkpoint (`params` of `step`, or the mean of the `averaged` steps);
  write hypotheses (and results JSON when references exist)."""
  config, start = loaded.config, time.time()
  batch_size = int(decode_text.eval_option(config, 'batch_size'))
  if source_file:
    name = os.path.basename(source_file).removesuffix('.gz')
    batches, examples = _file_batches(
      config, loaded.tokenizer, source_file, reference_file, batch_size
    )
  else:
    name = split
    batches = data.make_eval_batches(config, loaded.tokenizer, split, batch_size=batch_size)
    examples = {int(e['index']): e for e in data.load_examples(config, split)}
  hypotheses = decode_text.translate_batches(
    loaded.module, params, batches, loaded.tokenizer, settings
  )
  decode_seconds = time.time() - start
  default = decode_text.settings_from_config(config)
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
  result = decode_text.score(
    hypotheses, examples, loaded.tokenizer, **decode_text.target_text(config)
  )
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
def _check_run_arguments(checkpoint, split, source_file, reference_file) -> None:
  """ValueError for a --split/--source_file/--reference_file or --checkpoint that cannot work."""
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


def _resolve_checkpoints(workdir: str, checkpoint: str, output) -> list:
  """The checkpoints `checkpoint` names; several need {step} in --output."""
  checkpoints = restore.resolve_checkpoints(workdir, checkpoint)
  if output and len(checkpoints) > 1 and '{step}' not in output:
    raise ValueError(
      f'--output={output}: several checkpoints would overwrite one file; '
      'put {step} in the name, e.g. --output=out/val-{step}.json'
    )
  return checkpoints


def _pending_checkpoints(checkpoints, eval_dir: str, ledger_key: str, name: str) -> list:
  """--checkpoint=all: those of `checkpoints` the ledger has no result for under `ledger_key`."""
  steps = scoring.pending_steps(
    [c.step for c in checkpoints], scoring.load_ledger(eval_dir), ledger_key
  )
  print(f'{len(steps)} checkpoint(s) to evaluate on {name}: {steps}')
  return [restore.Checkpoint(step) for step in steps]


def _load_params(workdir: str, checkpoint: str, ckpt, config):
  """(checkpoint, params) to evaluate; None for a --checkpoint=all step that cannot be read."""
  if checkpoint != 'all':
    return restore.load_checkpoint(workdir, checkpoint, config)
  try:
    return ckpt, restore.load_params(workdir, ckpt, config)
  except checkpointing.CheckpointUnreadable as e:
    logging.warning('%s; skipped (--checkpoint=all goes on with the others)', e)
    return None
  except FileNotFoundError:  # a training run still writing here deleted it (keep_checkpoints)
    logging.warning(
      'checkpoint %d of %s was deleted while evaluating (the training run '
      'keeps only its newest checkpoints); skipped',
      ckpt.step,
      workdir,
    )
    return None


def _record_result(result, ckpt, eval_dir: str, ledger_key: str) -> None:
  """Adds a scored single checkpoint to the ledger and says what was written."""
  if 'results_file' in result:
    if not ckpt.averaged:  # the ledger tracks single checkpoints, for --checkpoint=all
      scoring.record_in_ledger(eval_dir, ledger_key, ckpt.step, result['results_file'])
    print(f'wrote {result["results_file"]} and {result["hypotheses_file"]}')
  else:
    print(f'wrote {result["hypotheses_file"]} (no reference, so no scores)')


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
  _check_run_arguments(checkpoint, split, source_file, reference_file)
  loaded = restore.load_workdir(workdir)
  config = loaded.config
  if not source_file and not split:
    split = list(config.data.get('eval_splits') or ['val'])[0]
  settings = decode_text.settings_from_config(config, decode, beam_size, alpha)
  checkpoints = _resolve_checkpoints(workdir, checkpoint, output)
  eval_dir = layout.eval_dir(workdir)
  name = split or os.path.basename(source_file).removesuffix('.gz')
  ledger_key = f'{name}:{settings.tag}'
  if checkpoint == 'all':
    checkpoints = _pending_checkpoints(checkpoints, eval_dir, ledger_key, name)
  results = []
  for ckpt in checkpoints:
    loaded_params = _load_params(workdir, checkpoint, ckpt, config)
    if loaded_params is None:
      continue
    ckpt, params = loaded_params
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
    _record_result(result, ckpt, eval_dir, ledger_key)
    results.append(result)
  return results


def _define_flags():
  # Defined only when run as a program: library users import this module.
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
  cli.run(main, define_flags=_define_flags, required=('workdir',), huge_pages=True)

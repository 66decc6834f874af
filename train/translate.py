"""Translate sentences with a trained checkpoint: one input line in, one translation out.

  echo "A dog runs through the snow." | python -m train.translate --workdir=DIR
  python -m train.translate --workdir=DIR "A dog runs." "Two men talk."
  python -m train.translate --workdir=DIR --checkpoint=best --input=sentences.en.gz > out.de
  python -m train.translate --workdir=DIR --checkpoint=avg_last:10 "A dog runs."

Input is raw text. A model trained on processed text (`data.preprocess='lc_norm_tok'`) gets it
lowercased, normalised and Moses-tokenized like its training data, and its output is printed
Moses-detokenized: readable, lowercased text (`&apos;` back to `'`).
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from train import cli
from train import decode_text
from train import restore
from train import runtime
from train import scoring


def translate(
  workdir: str,
  sentences: Sequence[str | None],
  *,
  checkpoint: str = 'latest',
  decode=None,
  beam_size=None,
  alpha=None,
  batch_size=None,
) -> list[str]:
  """Translations of `sentences`, in their order, by one checkpoint of `workdir` (readable
  text: detokenized for a processed-text model, see the module docstring). An empty or blank
  sentence, or None (an unreadable line), gets an empty line: N lines in, N lines out."""
  if checkpoint == 'all':
    raise cli.UsageError(
      '--checkpoint=all: translate uses one checkpoint; '
      'give latest, best, a step number or avg_last:N'
    )
  todo = [i for i, s in enumerate(sentences) if s is not None and s.strip()]
  out_lines = [''] * len(sentences)
  loaded = restore.load_workdir(workdir)  # a missing workdir is an error even with no input
  if not todo:
    restore.resolve_checkpoints(workdir, checkpoint)  # and so is a missing checkpoint
    return out_lines
  config = loaded.config
  _, params = restore.load_checkpoint(workdir, checkpoint, config)
  settings = decode_text.settings_from_config(config, decode, beam_size, alpha)
  batch_size = batch_size or int(decode_text.eval_option(config, 'batch_size'))
  batches = decode_text.text_batches(
    loaded.tokenizer,
    decode_text.model_text(config, [sentences[i] for i in todo], 'source'),
    None,
    arch=config.model.get('arch', 'encoder_decoder'),
    batch_size=batch_size,
    max_src_len=config.data.max_src_len,
    max_tgt_len=config.data.max_tgt_len,
  )
  out = decode_text.translate_batches(loaded.module, params, batches, loaded.tokenizer, settings)
  for i, line in zip(todo, decode_text.readable(config, [out[j] for j in range(len(todo))])):
    out_lines[i] = line
  return out_lines


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir.')
  flags.DEFINE_string('checkpoint', 'latest', 'latest | best | STEP | avg_last:N.')
  flags.DEFINE_string('input', '-', "Plain or .gz text, one sentence a line; '-' = stdin.")
  flags.DEFINE_enum('decode', None, ['beam', 'greedy'], 'Default: config.eval.decode.')
  flags.DEFINE_integer('beam_size', None, 'Default: config.eval.beam_size.')
  flags.DEFINE_float('alpha', None, 'Beam length penalty; default: config.eval.alpha.')
  flags.DEFINE_integer('batch_size', None, 'Sentences per decode batch (default eval.batch_size).')


def main(argv):
  f = flags.FLAGS
  if argv[1:] and f.input != '-':
    raise cli.UsageError(f'give sentences as arguments or --input={f.input}, not both')
  if argv[1:]:  # sentences given as arguments: no stdin
    sentences = list(argv[1:])
  elif f.input == '-':
    sentences = scoring.decode_lines(sys.stdin.buffer, '<stdin>', bad_utf8='skip')
  else:
    sentences = scoring.read_lines(f.input, bad_utf8='skip')
  runtime.setup_runtime()
  for line in translate(
    f.workdir,
    sentences,
    checkpoint=f.checkpoint,
    decode=f.decode,
    beam_size=f.beam_size,
    alpha=f.alpha,
    batch_size=f.batch_size,
  ):
    print(line)


if __name__ == '__main__':
  cli.run(main, define_flags=_define_flags, required=('workdir',), huge_pages=True)

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

from train import evaluate
from train import scoring


def translate(workdir: str, sentences: Sequence[str], *, checkpoint: str = "latest",
              decode=None, beam_size=None, alpha=None, batch_size=None) -> list[str]:
  """Translations of `sentences`, in their order, by one checkpoint of `workdir` (readable
  text: detokenized for a processed-text model, see the module docstring)."""
  if checkpoint == "all":
    raise ValueError("--checkpoint=all: translate uses one checkpoint; "
                     "give latest, best, a step number or avg_last:N")
  if not sentences:
    return []
  loaded = evaluate.load_workdir(workdir)
  config = loaded.config
  (ckpt,) = evaluate.resolve_checkpoints(workdir, checkpoint)
  params = evaluate.load_params(workdir, ckpt, config)
  settings = evaluate.settings_from_config(config, decode, beam_size, alpha)
  batch_size = batch_size or int(config.get("eval", {}).get("batch_size", 0) or 0) or 32
  batches = evaluate.text_batches(
      loaded.tokenizer, evaluate.model_text(config, sentences, "source"), None,
      arch=config.model.get("arch", "encoder_decoder"),
      batch_size=batch_size, max_src_len=config.data.max_src_len,
      max_tgt_len=config.data.max_tgt_len)
  out = evaluate.translate_batches(loaded.module, params, batches, loaded.tokenizer, settings)
  return evaluate.readable(config, [out[i] for i in range(len(sentences))])


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("workdir", None, "Training workdir.", required=True)
  flags.DEFINE_string("checkpoint", "latest", "latest | best | STEP | avg_last:N.")
  flags.DEFINE_string("input", "-", "Plain or .gz text, one sentence a line; '-' = stdin.")
  flags.DEFINE_enum("decode", None, ["beam", "greedy"], "Default: config.eval.decode.")
  flags.DEFINE_integer("beam_size", None, "Default: config.eval.beam_size.")
  flags.DEFINE_float("alpha", None, "Beam length penalty; default: config.eval.alpha.")
  flags.DEFINE_integer("batch_size", None, "Sentences per decode batch (default eval.batch_size).")


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  if argv[1:] and f.input == "-":  # sentences given as arguments: no stdin
    sentences = list(argv[1:])
  elif f.input == "-":
    sentences = [line.rstrip("\r\n") for line in sys.stdin]
  else:
    sentences = scoring.read_lines(f.input)
  try:
    lines = translate(f.workdir, sentences, checkpoint=f.checkpoint, decode=f.decode,
                      beam_size=f.beam_size, alpha=f.alpha, batch_size=f.batch_size)
  except (ValueError, FileNotFoundError) as e:  # bad flags or files: the message says the fix
    sys.exit(f"error: {e}")
  for line in lines:
    print(line)


if __name__ == "__main__":
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)

"""Pictures of a trained model: cross-attention heatmaps and the position schemes.

  python -m launch.plots --workdir=DIR [--checkpoint=latest|best|STEP|avg_last:N] [--split=val]
      [--num_sentences=3]

writes PNGs to `DIR/plots/` (or `--out`): `cross_attention-{i}.png` per sentence (one panel
per layer, heads averaged, plus one per head of the last layer), `sinusoid_table.png`,
`rotary_similarity.png`, `alibi_bias.png`, and `t5_bias.png` (the checkpoint's learned buckets
when it uses T5 positions, else freshly initialised ones, labelled as such).
Every figure is FIGSIZE inches at DPI dots per inch (launch/plots_draw.py), so FIGSIZE * DPI
pixels. The arrays come from launch/plots_data.py, the drawing from launch/plots_draw.py; this
module picks the figures for one checkpoint and is the command line.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from launch import plots_data, plots_draw
from train import data, decode_text, restore


# ---------------------------------------------------------------------------------------------
# Position schemes
# ---------------------------------------------------------------------------------------------
def position_figures(out_dir: str, model_cfg, params=None, length: int = 48) -> list[str]:
  """Sinusoid table, rotary similarity, ALiBi and T5 bias per head, for `model_cfg`'s sizes.

  T5 uses the learned tables found in `params` (one figure per stack); without any, a table
  drawn like the model's initialiser, labelled as untrained.
  """
  d_model, heads = int(model_cfg.d_model), int(model_cfg.num_heads)
  head_dim = int(model_cfg.get('head_dim') or d_model // heads)
  table = plots_data.sinusoid_table(4 * length, d_model)
  paths = [plots_draw.plot_sinusoid_table(os.path.join(out_dir, 'sinusoid_table.png'), table)]
  distances, curves = plots_data.rotary_similarity(head_dim, 4 * length)
  paths.append(
    plots_draw.plot_rotary_similarity(
      os.path.join(out_dir, 'rotary_similarity.png'), distances, curves, head_dim
    )
  )
  paths.append(
    plots_draw.plot_bias_per_head(
      os.path.join(out_dir, 'alibi_bias.png'),
      plots_data.alibi_bias_hqk(heads, length),
      'ALiBi',
      ' (slopes 2^(-8h/H); bidirectional, -slope * |i - j|)',
    )
  )
  max_distance = int(model_cfg.get('t5_max_distance') or 128)
  tables = plots_data.find_param(params, 't5_table') if params is not None else []
  if not tables:
    rng = np.random.default_rng(0)
    tables = [
      (
        'untrained (random init)',
        rng.standard_normal((int(model_cfg.get('t5_num_buckets') or 32), heads)),
      )
    ]
  for i, (path, table) in enumerate(tables):
    bidirectional = 'decoder' not in path.lower()
    name = 't5_bias.png' if i == 0 else f't5_bias-{i}.png'
    paths.append(
      plots_draw.plot_bias_per_head(
        os.path.join(out_dir, name),
        plots_data.t5_bias_hqk(table, length, bidirectional, max_distance),
        'T5',
        f' ({path}; {"bidirectional" if bidirectional else "causal"})',
      )
    )
  return paths


# ---------------------------------------------------------------------------------------------
# Cross-attention of a trained encoder-decoder
# ---------------------------------------------------------------------------------------------
def _pieces(tokenizer, ids, side: str) -> list[str]:
  names = {0: '<pad>', 1: '</s>', 2: '<s>', 3: '<unk>'}
  return [names.get(int(t)) or tokenizer.decode([int(t)], side=side) or '_' for t in ids]


def cross_attention_figures(
  out_dir: str, loaded, params, sources: Sequence[str], decode: str = 'greedy'
) -> list[str]:
  """Translate `sources`, then plot the cross-attention over each (source, own translation)."""
  config, tok = loaded.config, loaded.tokenizer
  settings = decode_text.settings_from_config(config, decode=decode)
  kwargs = dict(
    arch='encoder_decoder',
    batch_size=len(sources),
    max_src_len=config.data.max_src_len,
    max_tgt_len=config.data.max_tgt_len,
  )
  hyps = decode_text.translate_batches(
    loaded.module, params, decode_text.text_batches(tok, sources, None, **kwargs), tok, settings
  )
  hyps = [hyps[i] for i in range(len(sources))]
  (batch,) = decode_text.text_batches(tok, sources, hyps, **kwargs)
  weights = plots_data.cross_attention_weights(config.model, params, batch)
  paths = []
  for row, i in enumerate(batch['index']):
    if i < 0:
      continue
    src_n, tgt_n = int(batch['inputs_segment'][row].sum()), int(batch['targets_segment'][row].sum())
    title = f'Cross-attention, sentence {i}: {sources[i][:60]!r} -> {hyps[i][:60]!r}'
    paths.append(
      plots_draw.plot_cross_attention(
        os.path.join(out_dir, f'cross_attention-{i}.png'),
        weights[row],
        _pieces(tok, batch['inputs'][row, :src_n], 'source'),
        _pieces(tok, batch['targets'][row, :tgt_n], 'target'),
        title,
      )
    )
  return sorted(paths)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def make_plots(
  workdir: str,
  checkpoint: str = 'latest',
  *,
  split: str | None = None,
  num_sentences: int = 3,
  out_dir: str | None = None,
) -> list[str]:
  """Every figure for one checkpoint of `workdir`; returns the PNG paths."""
  loaded = restore.load_workdir(workdir)
  ckpt, params = restore.load_checkpoint(
    workdir, checkpoint if checkpoint != 'all' else 'latest', loaded.config
  )
  out_dir = out_dir or os.path.join(workdir, 'plots')
  paths = position_figures(out_dir, loaded.config.model, params)
  if loaded.config.model.get('arch', 'encoder_decoder') == 'encoder_decoder' and num_sentences:
    split = split or list(loaded.config.data.get('eval_splits') or ['val'])[0]
    sources = [e['source'] for e in data.load_examples(loaded.config, split)[:num_sentences]]
    paths += cross_attention_figures(out_dir, loaded, params, sources)
  return paths


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string('workdir', None, 'Training workdir.', required=True)
  flags.DEFINE_string('checkpoint', 'latest', 'latest | best | STEP | avg_last:N.')
  flags.DEFINE_string('split', None, 'Split whose first sentences get attention heatmaps.')
  flags.DEFINE_integer('num_sentences', 3, 'Sentences to draw cross-attention for.')
  flags.DEFINE_string('out', None, 'Output folder (default WORKDIR/plots).')


def main(argv):
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  from train import runtime  # pylint: disable=import-outside-toplevel

  runtime.setup_runtime()
  f = flags.FLAGS
  for path in make_plots(
    f.workdir, f.checkpoint, split=f.split, num_sentences=f.num_sentences, out_dir=f.out
  ):
    print(path)


if __name__ == '__main__':
  from train import cli  # pylint: disable=import-outside-toplevel

  cli.run(main, define_flags=_define_flags)

"""Helpers shared by the train.data tests: configs and tiny corpora."""

import gzip
import pathlib

import ml_collections as mlc

REPO = pathlib.Path(__file__).resolve().parents[2]


def make_config(**data):
  """A full config with the given config.data fields (others left to the code's defaults)."""
  model = {'arch': data.pop('arch', 'encoder_decoder')}
  top = {'seed': data.pop('seed', 0), 'batch_size': data.pop('batch_size', 16)}
  return mlc.ConfigDict({**top, 'data': data, 'model': model, 'eval': {'batch_size': 16}})


def write_gz(path, lines, raw: bytes | None = None):
  """Writes lines (str) joined by newlines, or exactly `raw` bytes, gzip-compressed."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  body = raw if raw is not None else ('\n'.join(lines) + '\n').encode('utf-8')
  with gzip.open(path, 'wb') as f:
    f.write(body)


def write_multi30k(root, splits: dict, langs=('en', 'de')):
  """root/multi30k/{prefix}.{lang}.gz for {prefix: [(en, de), ...]} (prefix 'val' = validation)."""
  for prefix, pairs in splits.items():
    for k, lang in enumerate(langs):
      write_gz(pathlib.Path(root) / 'multi30k' / f'{prefix}.{lang}.gz', [p[k] for p in pairs])
  return pathlib.Path(root)


def toy_pairs(n: int, offset: int = 0):
  """Distinct, aligned toy sentence pairs (the German side spells the number differently)."""
  return [
    (
      f'a dog number {i + offset} runs on the grass .',
      f'ein hund nummer {i + offset} rennt auf dem gras .',
    )
    for i in range(n)
  ]

"""Config validation, and writing / reading the resolved config of a run.

`validate` runs before anything is built or compiled, so a typo such as
`--config.model.position=bogus` fails in a second with the list of valid values.
"""

import json
import os

import ml_collections as mlc

import model
from model import config as model_config
from train import layout
from train.data import datasets, lengthgen, multi30k, pipeline, tokenizer

# Choice-valued keys and their valid values (docs/contracts.md). None is allowed where the
# contract says "None -> fall back to ...".
CHOICES = {
  'dropout_rng_impl': ('threefry2x32', 'rbg', 'unsafe_rbg'),
  # data.*: the data package's lists, from the modules that act on them.
  'data.name': datasets.NAMES,
  'data.tokenizer': tokenizer.KINDS,
  'data.length_policy': pipeline.POLICIES,
  'data.batching': pipeline.BATCHINGS,
  'data.preprocess': multi30k.PREPROCESS,
  # model.*: the model package's lists (model/config.py; schemes and kinds from their registries).
  'model.arch': model_config.ARCHS,
  'model.position': model_config.POSITIONS,
  'model.encoder_position': (None,) + model_config.POSITIONS,
  'model.decoder_position': (None,) + model_config.POSITIONS,
  'model.attention': model_config.ATTENTIONS,
  'model.attention_impl': model_config.ATTENTION_IMPLS,
  'model.ffn': model_config.FFNS,
  'model.norm': model_config.NORMS,
  'model.remat': model_config.REMATS,
  'model.dtype': model_config.DTYPES,
  'model.rnn_cell': model_config.RNN_CELLS,
  'model.dropout_mask': model_config.DROPOUT_MASKS,
  'optim.schedule': ('rsqrt', 'cosine', 'constant'),
  'eval.decode': ('beam', 'greedy'),
  'eval.train_decode': (None, 'beam', 'greedy'),
}

# Keys added after runs were already written: a resolved config without them is still valid.
OPTIONAL = (
  'dropout_rng_impl',
  'loss_chunk_tokens',
  'model.attention_impl',
  'patience',
  'data.preprocess',
  'model.dropout_mask',
)

POSITIVE_INTS = (
  'total_steps',
  'batch_size',
  'log_every',
  'checkpoint_every',
  'optim.grad_accum_steps',
)  # model.* sizes: model/config.py's validate, run by _validate_model below
NON_NEGATIVE_INTS = (
  'patience',
  'loss_chunk_tokens',
)


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    if part not in node:
      raise ValueError(f'config is missing key {dotted!r} (see docs/contracts.md)')
    node = node[part]
  return node


def _has(config, dotted):
  try:
    _get(config, dotted)
  except ValueError:
    return False
  return True


def validate(config):
  """Raises ValueError naming the bad key, its value and what would be valid."""
  errors = []
  for key, valid in CHOICES.items():
    if key in OPTIONAL and not _has(config, key):
      continue
    value = _get(config, key)
    if value not in valid:
      shown = ', '.join('None' if v is None else v for v in valid)
      errors.append(f'--config.{key}={value!r} is not valid; choose one of: {shown}')
  for key in POSITIVE_INTS:
    value = _get(config, key)
    if not isinstance(value, int) or value < 1:
      errors.append(f'--config.{key}={value!r} must be a positive integer')
  for key in NON_NEGATIVE_INTS:
    if key in OPTIONAL and not _has(config, key):
      continue
    value = _get(config, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      errors.append(f'--config.{key}={value!r} must be a non-negative integer (0 = off)')
  if config.batch_size % config.optim.grad_accum_steps:
    errors.append(
      f'batch_size={config.batch_size} is not divisible by '
      f'optim.grad_accum_steps={config.optim.grad_accum_steps}'
    )
  for axis in ('data', 'fsdp', 'tensor'):
    size = config.mesh[axis]
    if not isinstance(size, int) or (size < 1 and not (axis == 'data' and size == -1)):
      errors.append(f'mesh.{axis}={size!r} must be a positive integer (mesh.data may be -1)')
  for rule in config.mesh_rules:
    if len(rule) != 2:
      errors.append(f'mesh_rules entry {rule!r} is not a (logical_axis, mesh_axes) pair')
  if config.data.name == 'lengthgen':
    if config.data.task not in lengthgen.TASKS:
      errors.append(
        f'--config.data.task={config.data.task!r} is not a lengthgen task; choose '
        f'one of: {", ".join(lengthgen.TASKS)}'
      )
  preprocess = config.data.get('preprocess', 'raw')
  if preprocess in CHOICES['data.preprocess'][1:] and config.data.name != 'multi30k':
    errors.append(
      f'--config.data.preprocess={preprocess!r} applies to multi30k '
      f'only (data.name={config.data.name!r}); use raw'
    )
  if errors:
    raise ValueError('invalid config:\n  ' + '\n  '.join(errors))
  _validate_model(config.model)
  return config


def _validate_model(model_cfg):
  """The model package's own cross-key checks (heads, rotary needs an even head_dim, ...), run on
  a copy with a placeholder vocabulary since the tokenizer may not exist yet."""
  cfg = mlc.ConfigDict(model_cfg.to_dict())
  if not cfg.vocab_size:
    cfg.vocab_size = 8
  model.make_config(cfg)


def _jsonable(x):
  if isinstance(x, (mlc.ConfigDict, dict)):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return x


def save_config(config, workdir):
  """Writes WORKDIR/config.json (machine-readable) and config.txt (ml_collections repr)."""
  os.makedirs(workdir, exist_ok=True)
  layout.write_json(os.path.join(workdir, layout.CONFIG_FILE), _jsonable(config))
  layout.write_text(os.path.join(workdir, layout.CONFIG_TEXT_FILE), str(config))


def _tuplify(x):
  """JSON has no tuples; configs use them for immutable lists (mesh_rules, boundaries)."""
  if isinstance(x, dict):
    return {k: _tuplify(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuplify(v) for v in x)
  return x


def load_config(workdir):
  """The resolved config a run in `workdir` was trained with."""
  path = os.path.join(workdir, layout.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: is {workdir!r} a train.main workdir?')
  with open(path) as f:
    raw = json.load(f)
  return mlc.ConfigDict(_tuplify(raw))


def diff(old, new, prefix=''):
  """Dotted keys whose values differ between two configs (for the resume warning)."""
  old, new = _jsonable(old), _jsonable(new)
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k), new.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      out += diff(a, b, f'{prefix}{k}.')
    elif a != b:
      out.append(f'{prefix}{k}: {a!r} -> {b!r}')
  return out


def resolve(config, vocab_size):
  """The config as trained: a copy with references resolved and `model.vocab_size` filled in
  (from the tokenizer) when the config leaves it 0."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if not config.model.vocab_size:
      config.model.vocab_size = int(vocab_size)
  return config

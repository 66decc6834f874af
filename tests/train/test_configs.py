"""configs/: every variant validates, arg parsing rejects typos, config_io round-trips."""

import importlib

import pytest

from configs import common
from train import config_io

VARIANTS = [
  ('multi30k', None),
  ('multi30k', 'size=tiny'),
  ('multi30k', 'size=small,position=rotary'),
  ('multi30k', 'size=base,tgt=fr'),
  ('lengthgen', None),
  ('lengthgen', 'task=reverse,arch=decoder_only,position=alibi,size=tiny'),
  ('wmt14', None),
  ('wmt14', 'size=big'),
]


@pytest.mark.parametrize('name,arg', VARIANTS)
def test_config_variants_validate(name, arg):
  config = importlib.import_module(f'configs.{name}').get_config(arg)
  config_io.validate(config)
  for key in ('seed', 'total_steps', 'checkpoint_every', 'eval_every', 'log_every', 'batch_size'):
    assert key in config
  for key in (
    'arch',
    'position',
    'attention',
    'num_heads',
    'num_kv_heads',
    'num_layers',
    'd_model',
  ):
    assert key in config.model
  assert set(config.mesh) >= {'data', 'fsdp', 'tensor'}


def test_small_size_is_the_specified_one():
  m = importlib.import_module('configs.multi30k').get_config('size=small')
  assert (
    m.model.d_model,
    m.model.num_layers,
    m.model.num_heads,
    m.model.d_ff,
    m.data.vocab_size,
  ) == (256, 3, 4, 1024, 8000)


def test_wmt14_learning_rate_is_the_papers_peak():
  for size, d in (('base', 512), ('big', 1024)):
    c = importlib.import_module('configs.wmt14').get_config(f'size={size}')
    assert c.model.d_model == d
    assert c.optim.learning_rate == pytest.approx(d**-0.5 * 4000**-0.5)


def test_arg_typos_and_bad_values_are_named():
  with pytest.raises(ValueError, match="unknown config arg 'sise'.*size"):
    importlib.import_module('configs.multi30k').get_config('sise=tiny')
  with pytest.raises(ValueError, match='size'):
    importlib.import_module('configs.multi30k').get_config('size=huge')
  with pytest.raises(ValueError, match='key=value'):
    common.parse_arg('tiny', size='small')


def test_unknown_lengthgen_task_lists_the_tasks():
  config = importlib.import_module('configs.lengthgen').get_config('task=multiply')
  with pytest.raises(ValueError, match=r"data\.task='multiply'.*addition_reversed"):
    config_io.validate(config)
  config.data.task = 'addition_reversed'
  config_io.validate(config)


@pytest.mark.parametrize(
  'key,value,valid',
  [
    ('position', 'bogus', 'rotary'),
    ('attention', 'flash', 'shared_qk'),
    ('arch', 'gpt', 'decoder_only'),
    ('remat', 'some', 'dots'),
  ],
)
def test_validate_lists_valid_choices(key, value, valid):
  config = common.base_config()
  config.model[key] = value
  with pytest.raises(ValueError, match=rf'model\.{key}.*{valid}'):
    config_io.validate(config)


def test_validate_catches_cross_key_errors():
  config = common.base_config()
  config.batch_size, config.optim.grad_accum_steps = 10, 4
  with pytest.raises(ValueError, match='grad_accum_steps'):
    config_io.validate(config)
  config = common.base_config()
  config.model.num_kv_heads = 3
  with pytest.raises(ValueError, match='num_kv_heads'):
    config_io.validate(config)


def test_save_and_load_round_trip(tmp_path):
  config = importlib.import_module('configs.multi30k').get_config('size=tiny')
  config_io.save_config(config, str(tmp_path))
  loaded = config_io.load_config(str(tmp_path))
  assert loaded.to_dict() == config.to_dict()
  assert config_io.diff(config, loaded) == []
  loaded.model.position = 'rotary'
  assert config_io.diff(config, loaded) == ["model.position: 'sinusoidal' -> 'rotary'"]
  assert 'model' in (tmp_path / 'config.txt').read_text()


def test_data_preprocess_is_a_validated_optional_choice(tmp_path):
  config = common.base_config()
  assert config.data.preprocess == 'raw'
  config.data.preprocess = 'moses'
  with pytest.raises(ValueError, match=r"data\.preprocess='moses'.*raw, lc_norm_tok"):
    config_io.validate(config)
  config.data.preprocess = 'lc_norm_tok'
  config_io.validate(config)
  config.data.name = 'lengthgen'
  with pytest.raises(ValueError, match='multi30k only'):
    config_io.validate(config)
  # A run written before the key existed still loads and validates (it trained on raw text).
  old = common.base_config()
  del old.data['preprocess']
  config_io.save_config(old, str(tmp_path))
  config_io.validate(config_io.load_config(str(tmp_path)))


def test_choice_lists_agree_with_the_registries():
  """Configs are plain data and keep literal lists; these must equal the model's registries
  (model/positions.py SCHEMES, model/attention.py KINDS and IMPLS), in their order, as must the
  lists written in configs/common.py's comments and docs/contracts.md."""
  import os
  import re
  from model import attention, positions

  schemes, kinds, impls = tuple(positions.SCHEMES), tuple(attention.KINDS), attention.IMPLS
  multi30k = importlib.import_module('configs.multi30k')
  lengthgen = importlib.import_module('configs.lengthgen')
  assert multi30k.SCHEMES == schemes and lengthgen.SCHEMES == schemes
  assert multi30k.ATTENTIONS == kinds
  assert [o['model.position'] for o in multi30k.sweep('positions')][: len(schemes)] == list(schemes)
  assert {o['model.attention'] for o in multi30k.sweep('attention')} == set(kinds)
  assert config_io.CHOICES['model.position'] == schemes
  assert config_io.CHOICES['model.attention'] == kinds
  assert config_io.CHOICES['model.attention_impl'] == impls

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with open(os.path.join(root, 'configs', 'common.py')) as f:
    common_src = f.read()

  def comment(key):
    line = re.search(rf'c\.model\.{key} = .*#(.*)', common_src).group(1)
    return tuple(re.sub(r'\(.*?\)', '', part).strip() for part in line.split('|'))

  assert comment('position') == schemes
  assert comment('attention') == kinds
  assert comment('attention_impl') == impls
  with open(os.path.join(root, 'docs', 'contracts.md')) as f:
    contracts = f.read()
  assert f'`position` (`{"|".join(schemes)}`)' in contracts
  assert f'`attention ({"|".join(repr(k) for k in kinds)})`' in contracts
  assert f'`attention_impl ({"|".join(repr(k) for k in impls)})`' in contracts


def test_defaults_live_in_one_place():
  """ModelConfig's field defaults are base_config's model section, key for key, and the data
  code's fallbacks are base_config's data section (configs.common.opt reads it)."""
  import dataclasses
  from configs import common
  from model.config import ModelConfig

  base = common.base_config()
  fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  assert set(fields) == set(base.model), set(fields) ^ set(base.model)
  assert {k: v for k, v in fields.items()} == {k: base.model[k] for k in fields}
  for key in (
    'packed_len',
    'bucket_boundaries',
    'batching',
    'vocab_size',
    'num_train',
    'max_src_len',
    'prefetch',
    'preprocess',
    'name',
  ):
    assert common.opt({}, key) == base.data[key]
  assert common.opt({'packed_len': 7}, 'packed_len') == 7
  assert common.opt({}, 'arch', section='model') == base.model.arch
  with pytest.raises(ValueError, match='base_config sets its default'):
    common.opt({}, 'packed_len', 128)
  # Top-level keys (section ''): what the trainer, loop, checkpointing and pipeline read.
  for key in ('keep_checkpoints', 'patience', 'loss_chunk_tokens', 'dropout_rng_impl', 'seed'):
    assert common.opt({}, key, section='') == base[key]
  assert common.opt({'patience': 0}, 'patience', section='') == 0  # a set 0 is not a default
  assert common.opt({}, 'batch_size', section='eval') == base.eval.batch_size

"""launch.sweep_plan: run names, override flags that parse back through ml_collections, and every
shipped sweep of configs/ validated as train.main would validate it."""

import os
import textwrap

import pytest

from launch import sweep_plan
from train import config_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------- pure helpers
def test_run_name_is_order_independent_safe_and_unique():
  a = sweep_plan.run_name({'model.position': 'rotary', 'seed': 1})
  assert (
    a
    == sweep_plan.run_name({'seed': 1, 'model.position': 'rotary'})
    == 'model.position-rotary__seed-1'
  )
  weird = sweep_plan.run_name({'data.path': '/tmp/a b/c', 'x': (1, 2)})
  assert '/' not in weird and ' ' not in weird and weird
  long_a = sweep_plan.run_name({f'k{i}': 'v' * 20 for i in range(10)})
  long_b = sweep_plan.run_name({**{f'k{i}': 'v' * 20 for i in range(10)}, 'k9': 'w' * 20})
  assert len(long_a) <= 120 and long_a != long_b
  assert sweep_plan.run_name({}) == 'default'


def test_keys_shared_by_every_run_stay_out_of_workdir_names(tmp_path):
  tiny = {'total_steps': 10, 'model.d_model': 16}
  runs = sweep_plan.plan_runs(
    config='c.py',
    sweep_runs=[{**tiny, 'model.position': p} for p in ('a', 'b')],
    root=str(tmp_path),
    eval_splits=['test'],
  )
  assert [r.name for r in runs] == ['model.position-a', 'model.position-b']
  assert '--config.total_steps=10' in runs[0].train_cmd  # still passed to the trainer
  single = sweep_plan.plan_runs(
    config='c.py', sweep_runs=[tiny], root=str(tmp_path), eval_splits=['test']
  )
  assert single[0].name == 'model.d_model-16__total_steps-10'


def test_override_flags_parse_back_through_ml_collections(tmp_path):
  from absl import flags
  from ml_collections import config_flags

  cfg = tmp_path / 'c.py'
  cfg.write_text(
    textwrap.dedent("""
      import ml_collections
      def get_config():
          return ml_collections.ConfigDict({'seed': 0, 'lr': 0.1, 'flag': False, 'name': 'x',
              'model': {'position': 'sinusoidal'}, 'sizes': (1, 2)})""")
  )
  overrides = {
    'seed': 3,
    'lr': 2.5e-4,
    'flag': True,
    'name': 'a b=c',
    'model.position': 'rotary',
    'sizes': (4, 5, 6),
  }
  argv = ['prog', f'--config={cfg}', *sweep_plan.override_flags(overrides)]
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv)
  fv(argv)
  got = holder.value
  assert (got.seed, got.lr, got.flag, got.name, got.model.position, tuple(got.sizes)) == (
    3,
    2.5e-4,
    True,
    'a b=c',
    'rotary',
    (4, 5, 6),
  )


# ---------------------------------------------------------------------------- shipped sweeps
_SWEEP_NAMES = (
  'smoke',
  'positions',
  'attention',
  'heads',
  'archs',
  'study',
  'lengthgen',
  'addition_reversed',
)


def _shipped_sweeps():
  """(config spec, sweep name, overrides) for every named sweep the configs/ files define."""
  out = []
  for name in sorted(os.listdir(os.path.join(REPO, 'configs'))):
    path = os.path.join('configs', name)
    if not name.endswith('.py') or name.startswith('_'):
      continue
    module = config_file.load_module(os.path.join(REPO, path))
    if not hasattr(module, 'sweep') and not hasattr(module, 'SWEEPS'):
      continue
    for sweep_name in _SWEEP_NAMES:
      try:
        runs = sweep_plan.get_sweep(module, sweep_name)
      except ValueError as e:
        if 'unknown sweep' in str(e):
          continue
        raise
      out += [(path, sweep_name, overrides) for overrides in runs]
  return out


def _grouped_sweeps():
  from ml_collections.config_flags.config_flags import UnsupportedOperationError

  groups = {}
  for path, sweep_name, overrides in _shipped_sweeps():
    groups.setdefault((path, sweep_name), []).append(overrides)
  # (path, sweep) -> reason, for a shipped sweep known not to pass the flags (strict xfail).
  known = {}
  return [
    pytest.param(
      path,
      name,
      runs,
      id=f'{os.path.basename(path)}:{name}',
      marks=[
        pytest.mark.xfail(strict=True, reason=known[(path, name)], raises=UnsupportedOperationError)
      ]
      if (path, name) in known
      else [],
    )
    for (path, name), runs in groups.items()
  ]


def test_study_configs_ship_sweeps():
  assert {'configs/multi30k.py', 'configs/lengthgen.py'} <= {p for p, _, _ in _shipped_sweeps()}


@pytest.mark.parametrize('path, sweep_name, runs', _grouped_sweeps())
def test_shipped_sweeps_override_real_keys_with_valid_values(path, sweep_name, runs):
  """Every run of every shipped sweep parses through the trainer's flags and validates."""
  from absl import flags
  from ml_collections import config_flags
  from train import config_io

  for overrides in runs:
    argv = ['prog', f'--config={os.path.join(REPO, path)}', *sweep_plan.override_flags(overrides)]
    fv = flags.FlagValues()
    holder = config_flags.DEFINE_config_file(
      'config', flag_values=fv, sys_argv=argv, lock_config=True
    )
    fv(argv)
    config = holder.value
    for key, value in overrides.items():
      got = config
      for part in key.split('.'):
        got = got[part]
      assert got == (tuple(value) if isinstance(value, list) else value), (sweep_name, key)
    config_io.validate(config)


def test_every_run_config_is_validated_before_anything_is_written(tmp_path):
  """A bad sweep value or --set override is refused up front, parsed as train.main parses it."""
  path = os.path.join(REPO, 'configs', 'multi30k.py')
  module = config_file.load_module(path)

  def plan(*extra):
    return sweep_plan.plan_runs(
      config=f'{path}:size=tiny',
      sweep_runs=sweep_plan.get_sweep(module, 'smoke', 'size=tiny'),
      root=str(tmp_path / 'root'),
      eval_splits=['test_2016_flickr'],
      extra=list(extra),
    )

  for run in plan('--config.total_steps=5'):
    sweep_plan.check_config(run)  # the shipped smoke sweep is valid
  with pytest.raises(ValueError, match=r"run model\.position-\w+: .*position='foo'.*rotary"):
    sweep_plan.check_config(plan('--config.model.position=foo')[0])
  with pytest.raises(ValueError, match='does not have'):
    sweep_plan.check_config(plan('--config.nokey=1')[0])
  with pytest.raises(ValueError, match='total_steps=abc'):
    sweep_plan.check_config(plan('--config.total_steps=abc')[0])
  assert not (tmp_path / 'root').exists()

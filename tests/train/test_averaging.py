"""averaging.py: the mean of the last N checkpoints' params, stored apart from checkpoints/."""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest

from configs import common
from train import averaging
from train import checkpointing
from train import restore
from train import mesh as mesh_lib
from train import trainer
from tests.train import toy


# ----------------------------------------------------------------------------- the mean itself


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {
    'dense': {
      'kernel': rng.normal(size=(3, 5)).astype(np.float32),
      'bias': rng.normal(size=(5,)).astype(np.float32),
    },
    'half': rng.normal(size=(4,)).astype(ml_dtypes.bfloat16),
    'count': np.array([7, 8], np.int32),
  }


def _exactly_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))


@pytest.mark.parametrize('n', [1, 3, 10])
def test_mean_of_identical_trees_is_that_tree_exactly(n):
  tree = _tree(0)
  _exactly_equal(averaging.average_trees([tree] * n), tree)


def test_mean_of_two_trees_against_numpy():
  a, b = _tree(1), _tree(2)
  b['count'] = a['count']  # integer leaves must agree; they are kept
  got = averaging.average_trees([a, b])
  for path in (('dense', 'kernel'), ('dense', 'bias')):
    x, y, g = a[path[0]][path[1]], b[path[0]][path[1]], got[path[0]][path[1]]
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, ((x.astype(np.float64) + y) / 2).astype(np.float32))
    np.testing.assert_allclose(g, np.mean([x, y], axis=0), rtol=1e-6)
  assert got['half'].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(
    got['half'].astype(np.float32),
    ((a['half'].astype(np.float64) + b['half'].astype(np.float64)) / 2)
    .astype(ml_dtypes.bfloat16)
    .astype(np.float32),
  )
  np.testing.assert_array_equal(got['count'], a['count'])


def test_mismatched_trees_are_refused():
  a, b = _tree(1), _tree(2)
  b['count'] = np.array([9, 8], np.int32)
  with pytest.raises(ValueError, match='non-float'):
    averaging.average_trees([a, b])  # the int32 leaves differ
  b['count'] = a['count']
  b['dense']['bias'] = b['dense']['bias'][:4]
  with pytest.raises(ValueError, match='cannot average'):
    averaging.average_trees([a, b])


def test_parse():
  assert averaging.parse('avg_last:10') == 10
  assert averaging.parse('latest') is None and averaging.parse('40') is None
  for bad in ('avg_last:0', 'avg_last:', 'avg_last:x', 'avg_last:-2'):
    with pytest.raises(ValueError, match='positive integer'):
      averaging.parse(bad)


# ----------------------------------------------------------------------------- on checkpoints


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """Checkpoints 1..5 of a toy model, keep_checkpoints=3 -> steps 3, 4, 5 remain; returns
  (workdir, template state, {step: host state})."""
  cfg = common.base_config()
  cfg.checkpoint_every, cfg.keep_checkpoints = 1, 3
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:2])
  module = toy.ToySeq2Seq()
  tx, _ = trainer.make_optimizer(cfg)
  batch = toy.make_batch()
  state, shardings = trainer.create_train_state(module, tx, cfg, mesh, batch)
  host = jax.device_get(state)
  fresh = lambda: jax.tree.map(lambda x, s: jax.device_put(x, s), host, shardings)
  step_fn = trainer.jit_train_step(module, tx, cfg, mesh, shardings)
  wd = str(tmp_path_factory.mktemp('avg'))
  ck = checkpointing.Checkpointer(wd, cfg)
  saved, state = {}, fresh()
  for i in range(1, 6):
    state, _ = step_fn(state, mesh_lib.global_batch(batch, mesh))
    saved[i] = jax.device_get(state)
    assert ck.save(state, {'pos': i})  # no metrics: only the newest 3 are kept
  ck.close()
  assert checkpointing.list_steps(wd) == [3, 4, 5]
  return wd, cfg, fresh, saved


def test_avg_last_writes_the_mean_apart_and_reuses_it(workdir, monkeypatch):
  wd, _, _, saved = workdir
  (ckpt,) = restore.resolve_checkpoints(wd, 'avg_last:2')
  assert ckpt == restore.Checkpoint(5, (4, 5)) and ckpt.label == 'avg2@5'
  params = jax.device_get(restore.load_params(wd, ckpt))
  expected = averaging.average_trees([saved[4].params, saved[5].params])
  _exactly_equal(params, expected)
  for p, a, b in zip(*(jax.tree.leaves(t) for t in (params, saved[4].params, saved[5].params))):
    np.testing.assert_allclose(p, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-6)
  where = os.path.join(wd, 'averaged', 'last2-4-5')
  assert sorted(os.listdir(os.path.join(wd, 'averaged'))) == ['last2-4-5']  # no temp dirs left
  with open(os.path.join(where, 'averaged.json')) as f:
    assert json.load(f)['steps'] == [4, 5]
  # Asked again: read back, not recomputed.
  monkeypatch.setattr(averaging, 'average_trees', lambda *_: pytest.fail('recomputed'))
  _exactly_equal(jax.device_get(restore.load_params(wd, ckpt)), expected)


def test_avg_last_1_is_the_latest_checkpoint_exactly(workdir):
  wd, _, _, saved = workdir
  (ckpt,) = restore.resolve_checkpoints(wd, 'avg_last:1')
  assert ckpt.averaged == (5,)
  _exactly_equal(jax.device_get(restore.load_params(wd, ckpt)), saved[5].params)


def test_too_few_checkpoints_is_one_clear_error(workdir):
  wd = workdir[0]
  with pytest.raises(
    ValueError,
    match=r'has only 3 checkpoint\(s\) \[3, 4, 5\].*'
    r'--config.keep_checkpoints=4',
  ) as e:
    restore.resolve_checkpoints(wd, 'avg_last:4')
  assert '\n' not in str(e.value)


def test_an_average_is_never_latest_nor_resumed_from(workdir):
  wd, cfg, fresh, saved = workdir
  restore.load_params(wd, restore.Checkpoint(5, (3, 4, 5)))
  assert os.path.isdir(os.path.join(wd, 'averaged', 'last3-3-5', 'params'))
  assert checkpointing.list_steps(wd) == [3, 4, 5]
  assert restore.resolve_steps(wd, 'latest') == [5]
  assert restore.resolve_steps(wd, 'all') == [3, 4, 5]
  assert [c.step for c in restore.resolve_checkpoints(wd, 'all')] == [3, 4, 5]
  ck = checkpointing.Checkpointer(wd, cfg)
  restored, data_state = ck.restore_latest(fresh())
  ck.close()
  assert int(restored.step) == 5 and data_state == {'pos': 5}
  _exactly_equal(jax.device_get(restored.params), saved[5].params)


def test_sweep_and_report_read_or_skip_average_result_names(tmp_path):
  from launch import report_data, sweep_plan

  eval_dir = tmp_path / 'eval'
  eval_dir.mkdir()
  (eval_dir / 'val-40.json').write_text('{}')
  os.utime(eval_dir / 'val-40.json', (1, 1))
  (eval_dir / 'val-avg2@40.json').write_text('{}')
  (eval_dir / 'val-avg2@40.hyp.txt').write_text('')
  # launch.sweep (--checkpoint=avg_last:N): the newest results file, average or not.
  assert sweep_plan.latest_eval_files(str(tmp_path), ['val']) == {'val': 'val-avg2@40.json'}
  # launch.report without DONE.json: single-checkpoint results only; the average is skipped.
  assert report_data._newest_results(str(tmp_path)) == {'val': os.path.join('eval', 'val-40.json')}


def test_an_average_reads_back_from_a_relative_workdir(tmp_path, monkeypatch):
  # Orbax returns no item metadata for a relative path: `--workdir=runs/x` once failed here.
  params = {
    'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)},
    'bias': np.ones((3,), np.float32),
  }
  monkeypatch.chdir(tmp_path)
  path = averaging.write_average('wd', [1, 2], params)
  assert not os.path.isabs(path)
  back = averaging.read_params(path)
  jax.tree.map(np.testing.assert_array_equal, back, params)

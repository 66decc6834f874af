"""train.layout: results file names both ways, the eval-results lookup, the word2vec run names,
the atomic writer."""

import json
import os
import stat
import subprocess
import sys

import pytest

from train import layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------- results names
@pytest.mark.parametrize(
  'split, step, averaged, tag, name',
  [
    ('test_2016_flickr', 700, 0, '', 'test_2016_flickr-700.json'),
    ('val', 40, 2, '', 'val-avg2@40.json'),
    ('val', 100, 0, 'greedy', 'val-100-greedy.json'),
    ('val', 100, 10, 'beam4-a0.6', 'val-avg10@100-beam4-a0.6.json'),
    ('my-split-3', 5, 0, '', 'my-split-3-5.json'),  # a split may contain '-' and digits
    ('copy-12', 0, 3, 'beam1-a0', 'copy-12-avg3@0-beam1-a0.json'),
  ],
)
def test_results_names_round_trip(split, step, averaged, tag, name):
  assert layout.results_name(split, step, averaged=averaged, tag=tag) == name
  parsed = layout.parse_results_name(name)
  assert parsed == layout.ResultsName(split, step, averaged, tag)
  assert parsed.name == name
  assert parsed.label == (f'avg{averaged}@{step}' if averaged else str(step))


@pytest.mark.parametrize(
  'name',
  [
    'ledger.json',
    'val-40.hyp.txt',
    'val-avg2@40.hyp.txt',
    'val.json',
    'val-40.json.tmp',
    '.val-40.json.abc',
    '-40.json',
    'val-x.json',
  ],
)
def test_parse_results_name_rejects_other_files(name):
  assert layout.parse_results_name(name) is None


def test_results_and_hypotheses_paths(tmp_path):
  wd = str(tmp_path)
  path = layout.results_path(wd, 'val', 100, averaged=4)
  assert path == os.path.join(wd, 'eval', 'val-avg4@100.json')
  assert layout.hypotheses_path(path) == os.path.join(wd, 'eval', 'val-avg4@100.hyp.txt')
  assert layout.hypotheses_path('out/custom') == 'out/custom.hyp.txt'  # --output without .json


# ---------------------------------------------------------------------------- lookup
def _touch(directory, name, mtime):
  path = directory / name
  path.write_text('{}')
  os.utime(path, (mtime, mtime))


def test_latest_results_newest_per_split_default_decoding_only(tmp_path):
  eval_dir = tmp_path / 'eval'
  eval_dir.mkdir()
  _touch(eval_dir, 'val-40.json', 10)
  _touch(eval_dir, 'val-80.json', 20)
  _touch(eval_dir, 'val-avg2@80.json', 30)
  _touch(eval_dir, 'val-90-greedy.json', 40)  # other decode settings: never "the" result
  _touch(eval_dir, 'test-10.json', 5)
  _touch(eval_dir, 'test-5.json', 6)  # newer by time, not by step
  _touch(eval_dir, 'ledger.json', 50)
  _touch(eval_dir, 'val-80.hyp.txt', 60)
  assert layout.latest_results(str(tmp_path)) == {
    'val': 'eval/val-avg2@80.json',
    'test': 'eval/test-5.json',
  }
  assert layout.latest_results(str(tmp_path), averaged=False) == {
    'val': 'eval/val-80.json',
    'test': 'eval/test-5.json',
  }
  # Given splits: only those, in that order; a split without results is left out.
  got = layout.latest_results(str(tmp_path), ['test', 'val', 'missing'])
  assert list(got.items()) == [('test', 'eval/test-5.json'), ('val', 'eval/val-avg2@80.json')]
  assert layout.latest_results(str(tmp_path / 'nowhere')) == {}


def test_sweep_and_report_use_the_layout_lookup(tmp_path):
  from launch import report_data, sweep_plan

  eval_dir = tmp_path / 'eval'
  eval_dir.mkdir()
  _touch(eval_dir, 'val-40.json', 1)
  _touch(eval_dir, 'val-avg2@40.json', 2)
  assert sweep_plan.latest_eval_files(str(tmp_path), ['val']) == {'val': 'val-avg2@40.json'}
  assert report_data._newest_results(str(tmp_path)) == {'val': os.path.join('eval', 'val-40.json')}
  marker = sweep_plan.mark_done(str(tmp_path), ['val'])
  assert marker['results'] == {'val': os.path.join('eval', 'val-avg2@40.json')}
  with pytest.raises(RuntimeError, match=r"no eval/\{split\}-STEP.json for \['test'\]"):
    sweep_plan.mark_done(str(tmp_path), ['val', 'test'])


# ---------------------------------------------------------------------------- word2vec runs
def test_word2vec_run_names_are_the_on_disk_contract():
  """Finished word2vec runs on disk are read by these names (embed_init, word_eval)."""
  wd = os.path.join('runs', 'w2v')
  assert layout.embeddings_path(wd) == os.path.join(wd, 'embeddings.npy')
  assert layout.vocab_path(wd) == os.path.join(wd, 'vocab.json')
  assert layout.vocab_kind_path(wd) == os.path.join(wd, 'vocab_kind.txt')
  assert layout.w2v_results_path(wd) == os.path.join(wd, 'results.json')
  assert layout.vectors_path(wd) == os.path.join(wd, 'vectors.txt')
  assert layout.tokenizer_dir(wd) == os.path.join(wd, 'tokenizer')


def test_layout_sweep_and_report_import_no_jax_and_no_tensorflow():
  code = (
    'import sys; import train.layout, launch.sweep, launch.report, launch.report_data; '
    'launch.report_data.read_scalars("/nonexistent"); '
    'print(sorted(m for m in ("jax", "tensorflow", "matplotlib.pyplot") if m in sys.modules))'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == '[]'


# ---------------------------------------------------------------------------- writing
def test_write_atomic_replaces_whole_file_with_0644_and_leaves_no_temp(tmp_path):
  target = tmp_path / 'sub' / 'results.json'
  layout.write_atomic(target, b'{"a": 1}')
  layout.write_atomic(str(target), b'{"a": 2}')
  assert target.read_bytes() == b'{"a": 2}'
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
  assert os.listdir(target.parent) == ['results.json']


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
  target = tmp_path / 'results.json'
  layout.write_atomic(target, b'old')
  with pytest.raises(TypeError):
    layout.write_atomic(target, 'not bytes')
  assert target.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['results.json']


def test_write_text_and_json_formats(tmp_path):
  layout.write_text(tmp_path / 't.txt', 'Grüße\n')
  assert (tmp_path / 't.txt').read_bytes() == 'Grüße\n'.encode('utf-8')
  layout.write_json(tmp_path / 'a.json', {'b': 1, 'a': [1, 2]})
  assert (tmp_path / 'a.json').read_text() == json.dumps({'a': [1, 2], 'b': 1}, indent=2) + '\n'
  layout.write_json(tmp_path / 'u.json', {'b': 1, 'a': 2}, sort_keys=False)
  assert (tmp_path / 'u.json').read_text() == '{\n  "b": 1,\n  "a": 2\n}\n'
  layout.write_json(tmp_path / 'r.json', {'x': {1, 2}}, default=repr)
  assert json.loads((tmp_path / 'r.json').read_text()) == {'x': '{1, 2}'}
  assert stat.S_IMODE(os.stat(tmp_path / 'r.json').st_mode) == 0o644


def test_the_old_names_are_the_layout_writer():
  from launch import sweep_plan
  from train import scoring
  from train.data import paths

  assert paths.write_atomic is layout.write_atomic
  assert scoring.write_json is layout.write_json
  assert sweep_plan.write_json_atomic.func is layout.write_json

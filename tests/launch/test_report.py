"""launch.report: event-file reading, grouping over seeds, statistics, files written."""

import csv
import json
import os
import statistics

import pytest

from launch import report
from launch import report_data
from launch import report_figures


def _write_run(
  root, name, overrides, results, *, done=True, index=0, extra_results=None, eval_splits=()
):
  """A workdir as launch.sweep leaves it; results = {split: dict}."""
  workdir = root / name
  (workdir / 'eval').mkdir(parents=True)
  (workdir / 'sweep_run.json').write_text(
    json.dumps({'index': index, 'overrides': overrides, 'eval_splits': list(eval_splits)})
  )
  files = {}
  for split, res in results.items():
    rel = f'eval/{split}-{res["step"]}.json'
    (workdir / rel).write_text(json.dumps(res))
    files[split] = rel
  for rel, res in (extra_results or {}).items():
    (workdir / rel).write_text(json.dumps(res))
  if done:
    (workdir / 'DONE.json').write_text(json.dumps({'results': files}))
  return workdir


# ---------------------------------------------------------------------------- events
def test_read_scalars_merges_resumed_files_subdirs_and_torn_records(tmp_path):
  from tensorboardX import SummaryWriter

  tb = tmp_path / 'tb'
  first = SummaryWriter(str(tb), filename_suffix='.a')
  for step in range(1, 6):
    first.add_scalar('train/loss', 10.0 - step, step)
  first.close()
  # The resumed run repeats steps 4-5 (after its last checkpoint) with new values.
  second = SummaryWriter(str(tb), filename_suffix='.b')
  for step in range(4, 8):
    second.add_scalar('train/loss', 100.0 + step, step)
  second.close()
  evals = SummaryWriter(str(tb / 'eval'))
  evals.add_scalar('bleu', 12.5, 7)
  evals.close()
  files = sorted(p for p in tb.iterdir() if p.is_file())
  assert len(files) == 2
  with open(files[-1], 'ab') as f:  # a writer killed mid-record
    f.write(b'\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00partial')
  scalars = report_data.read_scalars(str(tb))
  assert scalars['train/loss'] == [
    (1, 9.0),
    (2, 8.0),
    (3, 7.0),
    (4, 104.0),
    (5, 105.0),
    (6, 106.0),
    (7, 107.0),
  ]
  assert scalars['eval/bleu'] == [(7, 12.5)]
  assert report_data.read_scalars(str(tmp_path / 'missing')) == {}


def test_mean_std_is_sample_std():
  values = [20.0, 22.0, 27.0]
  assert report_data.mean_std(values) == pytest.approx(
    (statistics.mean(values), statistics.stdev(values))
  )
  assert report_data.mean_std([3.0]) == (3.0, 0.0)


def test_by_length_reads_both_layouts():
  assert report_data.by_length({'exact_match_by_length': {'3': {'accuracy': 0.5, 'count': 2}}}) == {
    3: 0.5
  }
  assert report_data.by_length({'accuracy_by_length': {'10': 0.25}}) == {10: 0.25}
  assert report_data.by_length({'bleu': 1.0}) == {}
  both = {
    'exact_match_by_length': {'3': 0.5},
    'exact_match_by_target_length': {'4': {'accuracy': 0.75}},
  }
  assert report_data.by_length(both, 'target_length') == {4: 0.75} and report_data.by_length(
    both
  ) == {3: 0.5}


def test_facets_split_many_settings_into_panels():
  groups = [
    {
      'key': f'{p}{t}{a}',
      'setting': {'model.position': p, 'data.task': t, 'model.arch': a},
      'runs': [],
    }
    for t in ('copy', 'sort')
    for a in ('encoder_decoder', 'decoder_only')
    for p in ('none', 'sinusoidal', 'learned', 'shaw', 't5', 'rotary', 'alibi')
  ]
  panels = report_figures.facets(groups)
  assert len(panels) == 4 and all(len(items) == 7 for _, items in panels)
  title, items = panels[0]
  assert title == 'task=copy, arch=encoder_decoder'
  assert [label for label, _ in items][:2] == ['position=none', 'position=sinusoidal']
  few = report_figures.facets(groups[:3])
  assert len(few) == 1 and len(few[0][1]) == 3


# ---------------------------------------------------------------------------- whole report
def test_report_table_groups_seeds_and_uses_done_marker(tmp_path):
  bleus = [20.0, 22.0, 27.0]
  for seed, bleu in enumerate(bleus):
    _write_run(
      tmp_path,
      f'rotary-{seed}',
      {'model.position': 'rotary', 'seed': seed},
      {'test': {'step': 100 + seed, 'bleu': bleu, 'chrf': 50.0 + seed, 'loss': 2.0}},
      index=seed,
      # A newer results file of another checkpoint must not replace the marked one.
      extra_results={'eval/test-999.json': {'step': 999, 'bleu': 0.0, 'loss': 9.0}},
    )
  _write_run(
    tmp_path,
    'alibi-0',
    {'model.position': 'alibi', 'seed': 0},
    {'test': {'step': 80, 'bleu': 18.0, 'loss': 2.5}},
    index=3,
  )
  (tmp_path / 'cut-off').mkdir()
  (tmp_path / 'cut-off' / 'sweep_run.json').write_text(
    json.dumps({'index': 4, 'overrides': {'model.position': 'none', 'seed': 0}})
  )

  out = report.make_report(str(tmp_path))
  with open(out['csv']) as f:
    rows = list(csv.DictReader(f))
  assert [r['setting'] for r in rows] == ['model.position=rotary', 'model.position=alibi']
  rotary = rows[0]
  assert rotary['n_runs'] == '3' and rotary['model.position'] == 'rotary'
  assert float(rotary['bleu_mean']) == pytest.approx(statistics.mean(bleus))
  assert float(rotary['bleu_std']) == pytest.approx(statistics.stdev(bleus))
  assert rotary['steps'] == '100 101 102' and rotary['best_step'] == '101'
  assert rows[1]['chrf_mean'] == '' and float(rows[1]['bleu_mean']) == 18.0
  md = open(out['markdown']).read()
  assert (
    f'| model.position=rotary | 3 | {statistics.mean(bleus):.2f} ± {statistics.stdev(bleus):.2f} |'
    in md
  )
  assert '## Runs without results' in md and 'cut-off: not finished' in md
  assert out['plots'] == [str(tmp_path / 'plots' / 'bleu-test.png')]  # no lengths, no events
  assert os.path.getsize(out['plots'][0]) > 1000
  assert not [p for p in os.listdir(tmp_path) if '.tmp' in p]


def test_report_has_a_literature_bleu_column_beside_bleu(tmp_path):
  for seed, (bleu, lit) in enumerate([(30.0, 36.5), (32.0, 38.5)]):
    _write_run(
      tmp_path,
      f'run-{seed}',
      {'seed': seed},
      {'test': {'step': 10, 'bleu': bleu, 'bleu_lit': lit, 'chrf': 60.0, 'loss': 2.0}},
      index=seed,
    )
  out = report.make_report(str(tmp_path))
  with open(out['csv']) as f:
    row = next(csv.DictReader(f))
  assert float(row['bleu_lit_mean']) == pytest.approx(37.5)
  md = open(out['markdown']).read()
  assert '| setting | runs | bleu | bleu_lit | chrf | loss | step |' in md
  assert '| 31.00 ± 1.41 | 37.50 ± 1.41 |' in md


def test_report_lengthgen_plot_and_primary_metric(tmp_path):
  for pos, acc in (('rotary', 0.2), ('t5', 0.6)):
    for seed in (0, 1):
      workdir = _write_run(
        tmp_path,
        f'{pos}-{seed}',
        {'model.position': pos, 'seed': seed, 'total_steps': 7},
        {
          'test': {
            'step': 10,
            'exact_match': acc,
            'bleu': 1.0,
            'exact_match_by_length': {
              str(n): {'accuracy': acc if n > 20 else 1.0, 'count': 5} for n in (10, 20, 30, 40)
            },
            'exact_match_by_target_length': {'11': {'accuracy': acc, 'count': 20}},
          },
          'validation': {'step': 10, 'exact_match': 1.0},
        },
        eval_splits=['validation', 'test'],
      )
      (workdir / 'config.json').write_text(json.dumps({'data': {'train_max_len': 20}}))
  (tmp_path / 'plots').mkdir()
  (tmp_path / 'plots' / 'curves-old_tag.png').write_bytes(b'stale')
  out = report.make_report(str(tmp_path))
  names = sorted(os.path.basename(p) for p in out['plots'])
  assert sorted(os.listdir(tmp_path / 'plots')) == names
  assert names == [
    'exact_match-test.png',
    'exact_match-validation.png',
    'length-test.png',
    'target_length-test.png',
  ]
  md = open(out['markdown']).read()
  assert '## Accuracy by target length' in md
  assert md.index('## validation') < md.index('## test')  # the sweep's --eval_splits order
  # A key every run shares is stated once, not repeated in each setting's label.
  assert 'Every run: `total_steps=7`' in md and '| model.position=t5 | 2 |' in md
  # Lengths <= train_max_len (10, 20: accuracy 1) vs longer (30, 40: acc), count-weighted.
  rows = list(csv.DictReader(open(out['csv'])))
  t5 = next(r for r in rows if r['split'] == 'test' and 't5' in r['setting'])
  assert float(t5['exact_match_seen_mean']) == 1.0 and float(t5['exact_match_longer_mean']) == 0.6
  with pytest.raises(ValueError, match='--metric=.chrf.'):
    report.make_report(str(tmp_path), metric='chrf')


def test_report_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such directory'):
    report.make_report(str(tmp_path / 'nope'))
  with pytest.raises(ValueError, match='no run has results'):
    report.make_report(str(tmp_path))
  bad = _write_run(tmp_path, 'bad', {'seed': 0}, {'test': {'step': 1, 'bleu': 1.0}})
  (bad / 'eval' / 'test-1.json').write_text('{"bleu": ')
  with pytest.raises(ValueError, match=r'test-1.json:1: not valid JSON'):
    report.make_report(str(tmp_path))
  assert report.main([str(tmp_path / 'nope')]) == 1  # runtime: no such directory (train/cli.py)


def test_cli_usage_errors_are_one_line_exit_2(tmp_path, capsys):
  for argv in ([], ['--bogus', str(tmp_path)]):
    with pytest.raises(SystemExit) as e:
      report.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err


def test_curve_tags_prefer_validation_metric_then_losses():
  tags = [
    'train/loss',
    'train/accuracy',
    'eval/loss',
    'eval/accuracy',
    'eval/bleu',
    'perf/eta_s',
    'eval/exact_match',
  ]
  assert report_data.curve_tags({'run': {t: [] for t in tags}}) == [
    'eval/bleu',
    'eval/loss',
    'train/loss',
    'eval/accuracy',
  ]
  assert report_data.curve_tags({'run': {t: [] for t in tags}}, 'exact_match')[:2] == [
    'eval/exact_match',
    'eval/loss',
  ]

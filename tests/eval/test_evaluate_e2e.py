"""train.evaluate / train.translate / launch.plots on a tiny checkpoint trained by train.main.

One short training run (subprocess, lengthgen 'reverse', 40 steps, validation at 20 and 40)
serves every test in this module.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = """
from configs import lengthgen

def get_config(arg=None):
  c = lengthgen.get_config('size=tiny,task=reverse,train_len=6,test_len=8')
  c.total_steps, c.batch_size = 40, 16
  c.checkpoint_every, c.eval_every, c.log_every = 20, 20, 10
  c.keep_checkpoints = 5
  c.data.num_train, c.data.num_eval = 200, 24
  c.data.bucket_boundaries = ()     # one padded width: one compile
  c.data.max_src_len = c.data.max_tgt_len = 18
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.d_ff = 32, 2, 1, 64
  c.model.max_len = 40
  c.optim.schedule, c.optim.warmup_steps, c.optim.learning_rate = 'rsqrt', 5, 3e-3
  c.eval.bleu_sentences = 8         # the training loop calls decode_text.decode_and_score
  c.eval.loss_sentences = 0         # validation loss over the whole split
  c.eval.batch_size = 16
  c.eval.max_len_margin = 4
  c.mesh.data = 1
  return c
"""


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp('eval_e2e')
  (root / 'tiny.py').write_text(TINY)
  env = dict(
    os.environ,
    XLA_FLAGS=xla_flags(1),
    JAX_PLATFORMS='cpu',
    ATTNLAB_BUILD_DIR=str(root / 'build'),
    PYTHONPATH=REPO,
  )
  env.pop('ATTNLAB_DATA_DIR', None)
  wd = root / 'w'
  p = subprocess.run(
    [sys.executable, '-m', 'train.main', f'--config={root / "tiny.py"}', f'--workdir={wd}'],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert p.returncode == 0, p.stderr[-3000:]
  os.environ['ATTNLAB_BUILD_DIR'] = str(root / 'build')  # in-process calls find the data
  return str(wd)


REQUIRED = (
  'step',
  'split',
  'num_sentences',
  'bleu',
  'chrf',
  'sacrebleu_signature',
  'loss',
  'decode',
  'seconds',
  'exact_match',
  'exact_match_by_length',
  'exact_match_by_target_length',
)


@pytest.mark.slow
def test_all_mode_writes_every_key_then_skips(workdir, capsys):
  from train import checkpointing, evaluate

  results = evaluate.run(workdir, 'all', split='validation', decode='greedy', show=2)
  assert [r['step'] for r in results] == [20, 40]
  for r in results:
    with open(r['results_file']) as f:
      saved = json.load(f)
    assert set(REQUIRED) <= set(saved), set(REQUIRED) - set(saved)
    assert saved['num_sentences'] == 24 and saved['split'] == 'validation'
    assert 'tok:13a' in saved['sacrebleu_signature']
    assert saved['decode']['method'] == 'greedy'
    by_len = saved['exact_match_by_length']
    assert sum(v['count'] for v in by_len.values()) == 24
    assert all(1 <= int(k) <= 6 for k in by_len)
    with open(r['hypotheses_file']) as f:
      assert len(f.read().splitlines()) == 24
  out = capsys.readouterr().out
  assert 'SRC: ' in out and 'REF: ' in out and 'HYP: ' in out and 'signature' in out
  # Second call: the ledger lists both steps, nothing is decoded again.
  mtimes = [os.path.getmtime(r['results_file']) for r in results]
  assert evaluate.run(workdir, 'all', split='validation', decode='greedy') == []
  assert mtimes == [os.path.getmtime(r['results_file']) for r in results]
  # A different decode setting is a different evaluation: not skipped.
  assert checkpointing.list_steps(workdir) == [20, 40]


@pytest.mark.slow
def test_loss_matches_training_validation(workdir):
  from train import checkpointing, evaluate

  manager = checkpointing.make_manager(workdir, read_only=True)
  for step in (20, 40):
    (r,) = evaluate.run(
      workdir,
      str(step),
      split='validation',
      decode='greedy',
      output=os.path.join(workdir, 'loss-check-{step}.json'),
    )
    logged = manager.metrics(step)['val_loss']
    assert r['loss'] == pytest.approx(logged, rel=1e-5), (step, r['loss'], logged)


@pytest.mark.slow
def test_text_files_and_translate(workdir, tmp_path):
  from train import data, evaluate, restore, translate

  config = restore.load_workdir(workdir).config
  examples = data.load_examples(config, 'test')[:10]
  src, ref = tmp_path / 'src.txt', tmp_path / 'ref.txt.gz'
  src.write_text(''.join(e['source'] + '\n' for e in examples))
  import gzip

  with gzip.open(ref, 'wt') as f:
    f.write(''.join(e['target'] + '\n' for e in examples))
  (r,) = evaluate.run(
    workdir, 'latest', source_file=str(src), reference_file=str(ref), decode='beam', beam_size=2
  )
  assert r['num_sentences'] == 10 and r['split'] == 'src.txt'
  assert r['results_file'].endswith('src.txt-40-beam2-a0.6.json')
  # Only a source: translations, no scores.
  (r2,) = evaluate.run(
    workdir,
    'latest',
    source_file=str(src),
    decode='beam',
    beam_size=2,
    output=str(tmp_path / 'o.json'),
  )
  assert 'bleu' not in r2 and not os.path.exists(tmp_path / 'o.json')
  with open(r2['hypotheses_file']) as f:
    lines = f.read().splitlines()
  assert lines == r['hypotheses']  # same order as the source file
  # translate gives the same strings as evaluate for the same checkpoint and setting.
  out = translate.translate(
    workdir, [e['source'] for e in examples[:3]], decode='beam', beam_size=2
  )
  assert out == lines[:3]
  with pytest.raises(ValueError, match='available steps'):
    evaluate.run(workdir, '7', split='validation')
  with pytest.raises(ValueError, match='use latest, best, all or a step number'):
    evaluate.run(workdir, 'nope', split='validation')
  with pytest.raises(ValueError, match='not both'):
    evaluate.run(workdir, 'latest', split='test', source_file=str(src))


@pytest.mark.slow
def test_plots_for_trained_checkpoint(workdir, tmp_path):
  from launch import plots, plots_draw

  paths = plots.make_plots(
    workdir, 'latest', split='test', num_sentences=2, out_dir=str(tmp_path / 'plots')
  )
  names = sorted(os.path.basename(p) for p in paths)
  assert names == [
    'alibi_bias.png',
    'cross_attention-0.png',
    'cross_attention-1.png',
    'rotary_similarity.png',
    'sinusoid_table.png',
    't5_bias.png',
  ]
  expected = (
    int(plots_draw.FIGSIZE[0] * plots_draw.DPI),
    int(plots_draw.FIGSIZE[1] * plots_draw.DPI),
  )
  from PIL import Image

  for p in paths:
    assert os.path.getsize(p) > 10_000
    with Image.open(p) as im:
      assert im.size == expected
      assert np.asarray(im.convert('L')).std() > 5


@pytest.mark.slow
def test_command_lines(workdir):
  """The exact commands `make train` and the README use: flags parse, output is printed."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  p = subprocess.run(
    [
      sys.executable,
      '-m',
      'train.evaluate',
      f'--workdir={workdir}',
      '--checkpoint=latest',
      '--split=test',
      '--show=3',
      '--decode=greedy',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert p.stdout.count('SRC: ') == 3 and p.stdout.count('HYP: ') == 3
  assert 'test step 40: BLEU = ' in p.stdout and 'sacreBLEU signature: nrefs:1|' in p.stdout
  # greedy is this config's eval.decode, so the default file name carries no decode tag.
  assert os.path.exists(os.path.join(workdir, 'eval', 'test-40.json'))
  p = subprocess.run(
    [sys.executable, '-m', 'train.translate', f'--workdir={workdir}', '--decode=greedy'],
    input='abc\nxyz\n',
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert len(p.stdout.splitlines()) == 2


@pytest.mark.slow
def test_averaged_checkpoint(workdir, capsys):
  """--checkpoint=avg_last:2: the mean of steps 20 and 40, evaluated, translated and plotted
  like any checkpoint; its own result name; never listed as a checkpoint or in the ledger."""
  from launch import plots
  from train import checkpointing, evaluate, restore, scoring, translate

  (r,) = evaluate.run(workdir, 'avg_last:2', split='validation', decode='greedy')
  assert os.path.basename(r['results_file']) == 'validation-avg2@40.json'
  assert r['hypotheses_file'].endswith('validation-avg2@40.hyp.txt')
  with open(r['results_file']) as f:
    saved = json.load(f)
  assert saved['averaged_steps'] == [20, 40] and saved['checkpoint'] == 'avg_last:2'
  assert saved['step'] == 40 and saved['num_sentences'] == 24 and 'bleu' in saved
  assert 'validation mean of steps [20, 40]: BLEU = ' in capsys.readouterr().out
  info = os.path.join(workdir, 'averaged', 'last2-20-40', 'averaged.json')
  mtime = os.path.getmtime(info)
  # The average decodes differently from either checkpoint it came from (it is not a copy).
  single = evaluate.run(
    workdir,
    '40',
    split='validation',
    decode='greedy',
    output=os.path.join(workdir, 'single-check-{step}.json'),
  )[0]
  assert r['loss'] != pytest.approx(single['loss'], rel=1e-6)
  out = translate.translate(workdir, ['abc', 'xyz'], checkpoint='avg_last:2', decode='greedy')
  assert len(out) == 2
  paths = plots.make_plots(
    workdir,
    'avg_last:2',
    split='validation',
    num_sentences=1,
    out_dir=os.path.join(workdir, 'avg-plots'),
  )
  assert any(p.endswith('cross_attention-0.png') for p in paths)
  assert os.path.getmtime(info) == mtime  # computed once, then reused
  assert checkpointing.list_steps(workdir) == [20, 40]
  assert restore.resolve_steps(workdir, 'latest') == [40]
  for steps in scoring.load_ledger(os.path.join(workdir, 'eval')).values():
    assert not any('avg2@' in rel for rel in steps.values())
  with pytest.raises(ValueError, match=r'only 2 checkpoint\(s\).*keep_checkpoints=3'):
    evaluate.run(workdir, 'avg_last:3', split='validation')


def _with_broken_newest(workdir, tmp_path, how='truncate'):
  """A copy of the workdir whose newest checkpoint (40) has its params files truncated or
  its params metadata deleted."""
  import shutil

  copy = tmp_path / 'broken'
  shutil.copytree(workdir, copy)
  params = copy / 'checkpoints' / '40' / 'params'
  if how == 'truncate':
    for path in params.rglob('*'):
      if path.is_file() and 'ocdbt' in str(path.relative_to(params)) or path.parent.name == 'd':
        path.write_bytes(path.read_bytes()[:7])
  else:
    (params / '_METADATA').unlink()
  return str(copy)


@pytest.mark.slow
@pytest.mark.parametrize('how', ['truncate', 'delete_metadata'])
def test_broken_newest_checkpoint_falls_back_like_training(workdir, tmp_path, how):
  from train import checkpointing, evaluate, translate

  broken = _with_broken_newest(workdir, tmp_path, how)
  (r,) = evaluate.run(broken, 'latest', split='validation', decode='greedy')
  assert r['step'] == 20  # the previous one, as train.main would resume
  assert translate.translate(broken, ['abc', ''], decode='greedy')[1] == ''
  with pytest.raises(
    checkpointing.CheckpointUnreadable,
    match=r'checkpoint 40 .* cannot be restored .*steps that restore: \[20\]',
  ):
    evaluate.run(broken, '40', split='validation', decode='greedy')
  results = evaluate.run(broken, 'all', split='test', decode='greedy')
  assert [r['step'] for r in results] == [20]


@pytest.mark.slow
def test_broken_newest_checkpoint_command_lines(workdir, tmp_path):
  """One warning line and the previous checkpoint for latest; one error line (exit 1) naming
  the good steps for an explicit step; no Orbax notices, no traceback."""
  broken = _with_broken_newest(workdir, tmp_path)
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  base = [
    sys.executable,
    '-m',
    'train.evaluate',
    f'--workdir={broken}',
    '--split=test',
    '--decode=greedy',
  ]
  p = subprocess.run(
    base + ['--checkpoint=latest'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'test step 20: BLEU = ' in p.stdout
  warnings = [line for line in p.stderr.splitlines() if 'cannot be restored' in line]
  assert len(warnings) == 1 and 'using step 20 instead' in warnings[0], p.stderr[-3000:]
  assert 'Traceback' not in p.stderr and 'read only' not in p.stderr
  p = subprocess.run(
    base + ['--checkpoint=40'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert p.returncode == 1 and 'Traceback' not in p.stderr, p.stderr[-3000:]
  (line,) = [line for line in p.stderr.splitlines() if line.startswith('error: ')]
  assert 'checkpoint 40' in line and 'steps that restore: [20]' in line


@pytest.mark.slow
def test_translate_keeps_line_alignment(workdir, tmp_path):
  """N lines in, N lines out: empty lines stay empty, a non-UTF-8 line is skipped with a
  warning naming file and line, CRLF endings are read like LF."""
  from train import translate

  want = translate.translate(workdir, ['abc', 'xyz'], decode='greedy')
  src = tmp_path / 'in.txt'
  src.write_bytes(b'abc\r\n\r\nx\xff\xfey\nxyz\n   \n')
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  for how in ('file', 'stdin'):
    args = [f'--input={src}'] if how == 'file' else []
    p = subprocess.run(
      [sys.executable, '-m', 'train.translate', f'--workdir={workdir}', '--decode=greedy', *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      timeout=300,
      input=None if how == 'file' else src.read_bytes(),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout.decode().split('\n')[:-1]
    assert out == [want[0], '', '', want[1], ''], out
    name = str(src) if how == 'file' else '<stdin>'
    assert f'{name}:3: not valid UTF-8' in p.stderr.decode(), p.stderr[-2000:]
    assert b'Traceback' not in p.stderr


@pytest.mark.slow
def test_all_skips_a_checkpoint_deleted_while_evaluating(workdir, monkeypatch):
  """Found by the fault campaign: training deletes old steps (keep_checkpoints) while
  `--checkpoint=all` works through its list; a vanished step is skipped, not an exit 1."""
  from train import checkpointing, evaluate

  real = checkpointing.restore_params

  def deleted_meanwhile(w, step, config=None):
    if step == 20:
      raise FileNotFoundError(f'{w}/checkpoints: no checkpoint for step 20; available: [40]')
    return real(w, step, config)

  monkeypatch.setattr(checkpointing, 'restore_params', deleted_meanwhile)
  results = evaluate.run(workdir, 'all', split='test', decode='beam', beam_size=3)
  assert [r['step'] for r in results] == [40]

"""train.main end to end on a tiny length-generalization config (subprocesses where the property
needs a process: validation before compile, kill -9 + resume, SIGTERM, two hosts)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from train import checkpointing
from tests.xla_flags import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = """
from configs import lengthgen

def get_config(arg=None):
  c = lengthgen.get_config('size=tiny,task=reverse,train_len=6,test_len=8')
  c.total_steps, c.batch_size = 40, 16
  c.checkpoint_every, c.eval_every, c.log_every = 20, 40, 10
  c.data.num_train, c.data.num_eval = 200, 16
  c.data.bucket_boundaries = ()     # one padded width: one compile
  c.data.max_src_len = c.data.max_tgt_len = 18
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.d_ff = 32, 2, 1, 64
  c.model.max_len = 40
  c.model.dropout = 0.1             # resume must replay dropout exactly
  c.optim.schedule, c.optim.warmup_steps = 'rsqrt', 5
  c.eval.bleu_sentences = 0
  c.log_batch_hashes = True
  c.mesh.data = 1
  return c
"""


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp('main')
  (root / 'tiny.py').write_text(TINY)
  e = dict(os.environ)
  e.update(
    XLA_FLAGS=xla_flags(1),
    JAX_PLATFORMS='cpu',
    ATTNLAB_BUILD_DIR=str(root / 'build'),
    PYTHONPATH=REPO,
  )
  e.pop('ATTNLAB_DATA_DIR', None)
  return root, e


def _cmd(root, workdir, *overrides):
  return [
    sys.executable,
    '-m',
    'train.main',
    f'--config={root / "tiny.py"}',
    f'--workdir={workdir}',
    *overrides,
  ]


def _run(root, env, workdir, *overrides, timeout=300):
  p = subprocess.run(
    _cmd(root, workdir, *overrides),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return p


def _hashes(workdir):
  """step -> batch hash; a resumed run re-logs steps after its checkpoint: the last one wins."""
  out = {}
  with open(os.path.join(workdir, 'batches-p0.txt')) as f:
    for line in f:
      step, h = line.split()
      out[int(step)] = h
  return out


def _params(workdir, step):
  return jax.device_get(checkpointing.restore_params(str(workdir), step))


def test_bad_choice_fails_fast_listing_valid_values(env, tmp_path):
  root, e = env
  t0 = time.time()
  p = _run(root, e, tmp_path / 'w', '--config.model.position=bogus')
  assert p.returncode != 0
  assert "model.position='bogus'" in p.stderr
  assert 'none, sinusoidal, learned, shaw, t5, t5_unscaled, rotary, alibi' in p.stderr
  assert time.time() - t0 < 30
  assert not (tmp_path / 'w').exists()  # nothing built, nothing written


def test_kill9_resume_equals_straight_run(env, tmp_path):
  root, e = env
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  p = _run(root, e, straight)
  assert p.returncode == 0, p.stderr[-3000:]
  assert json.loads((straight / 'config.json').read_text())['model']['vocab_size'] > 0
  # Same command; killed with SIGKILL as soon as the step-20 checkpoint is complete.
  proc = subprocess.Popen(
    _cmd(root, resumed), cwd=REPO, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 300
  while not (resumed / 'checkpoints' / '20').is_dir():
    assert proc.poll() is None and time.time() < deadline, 'run ended before checkpoint 20'
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert checkpointing.list_steps(str(resumed)) == [20], 'kill came too late to test resume'
  p = _run(root, e, resumed)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'resumed from step 20' in p.stderr
  assert checkpointing.list_steps(str(resumed))[-1] == 40
  assert _hashes(resumed) == _hashes(straight)
  assert len(_hashes(straight)) == 40
  a, b = _params(straight, 40), _params(resumed, 40)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert os.path.isdir(resumed / 'tb') and os.listdir(resumed / 'tb')


def test_sigterm_saves_and_exits_zero(env, tmp_path):
  root, e = env
  w = tmp_path / 'w'
  proc = subprocess.Popen(
    _cmd(root, w, '--config.total_steps=100000', '--config.checkpoint_every=100000'),
    cwd=REPO,
    env=e,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 300
  while not (w / 'batches-p0.txt').exists() or len(_hashes(w)) < 5:
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  steps = checkpointing.list_steps(str(w))
  assert len(steps) == 1 and 5 <= steps[0] < 100000
  assert 'preempted at step' in err


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
  """2 processes x 2 CPU devices (gloo collectives) == 1 process with the same global batch."""
  e = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  port = _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'tests.train.multiprocess_worker',
        str(port),
        str(i),
        '2',
        str(tmp_path / f'p{i}.json'),
      ],
      cwd=REPO,
      env=e,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  e1 = dict(e, XLA_FLAGS=xla_flags(4))
  single = subprocess.run(
    [
      sys.executable,
      '-m',
      'tests.train.multiprocess_worker',
      '0',
      '-1',
      '1',
      str(tmp_path / 'single.json'),
    ],
    cwd=REPO,
    env=e1,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert single.returncode == 0, single.stderr[-2000:]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
  ref = json.loads((tmp_path / 'single.json').read_text())
  for i in range(2):
    got = json.loads((tmp_path / f'p{i}.json').read_text())
    assert (got['processes'], got['devices']) == (2, 4)
    for k in ('loss', 'grad_norm', 'param_sum'):
      np.testing.assert_allclose(got[k], ref[k], rtol=1e-6)


def _tiny_config_in_process(env, monkeypatch):
  """The module's tiny config for an in-process run, building into the module's build dir."""
  import importlib.util

  root, _ = env
  monkeypatch.setenv('ATTNLAB_BUILD_DIR', str(root / 'build'))
  spec = importlib.util.spec_from_file_location('tiny_cfg', root / 'tiny.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_nan_stops_with_clear_error_and_keeps_last_good_checkpoint(env, tmp_path, monkeypatch):
  """In-process, with the step poisoned from step 7 on: the run stops naming the step, and
  the newest checkpoint is the good step 4 (nothing non-finite was saved)."""
  import jax.numpy as jnp
  from train import loop, trainer

  config = _tiny_config_in_process(env, monkeypatch)
  config.checkpoint_every, config.log_every = 4, 100
  real_step = trainer.train_step

  def poisoned(state, batch, **kw):
    new, m = real_step(state, batch, **kw)
    bad = state.step >= 6
    m['loss'] = jnp.where(bad, jnp.nan, m['loss'])
    return new.replace(params=jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params)), m

  monkeypatch.setattr(trainer, 'train_step', poisoned)
  with pytest.raises(loop.NaNLossError, match='at step 7.*last good checkpoint is step 4'):
    loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  assert checkpointing.list_steps(str(tmp_path)) == [4]
  params = checkpointing.restore_params(str(tmp_path), 4)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_embed_init_loads_word2vec_rows_before_resume(env, tmp_path, monkeypatch):
  """--config.model.embed_init: the state handed to resume holds the word2vec matrix (row i =
  token id i) rescaled to the init std d_model**-0.5; other parameters keep their init."""
  from train import loop

  config = _tiny_config_in_process(env, monkeypatch)
  vocab, d = 4 + 26 + 10 + 1, config.model.d_model  # the lengthgen char vocabulary
  w2v = tmp_path / 'w2v'
  w2v.mkdir()
  emb = np.random.default_rng(0).normal(size=(vocab, d)).astype(np.float32) * 3.0
  np.save(w2v / 'embeddings.npy', emb)
  (w2v / 'vocab_kind.txt').write_text('sentencepiece\n')
  config.model.embed_init = str(w2v)
  seen = {}

  class Stop(Exception):
    pass

  def capture(self, state):
    seen['params'] = jax.device_get(state.params)
    raise Stop

  monkeypatch.setattr(checkpointing.Checkpointer, 'restore_latest', capture)
  with pytest.raises(Stop):
    loop.train_and_evaluate(config, str(tmp_path / 'run'), devices=jax.devices()[:1])
  got = np.asarray(seen['params']['embed']['embedding'])
  np.testing.assert_allclose(got, emb / emb.std() * d**-0.5, rtol=1e-6)
  assert not np.allclose(got, 0) and 'decoder' in seen['params']

  (w2v / 'vocab_kind.txt').write_text('word\n')  # a word-level run cannot be used
  with pytest.raises(ValueError, match="'word' word2vec run"):
    loop.train_and_evaluate(config, str(tmp_path / 'run2'), devices=jax.devices()[:1])


def test_patience_stops_survives_a_crash_and_does_not_retrain(env, tmp_path, monkeypatch, caplog):
  """In-process, validation scripted (best at 10, then 15 and 20 no better, patience 2). The
  first run crashes after validating 20 but before checkpoint 20 exists: resuming from 15 must
  rebuild the count (1 bad) from the history, not stop at once, and stop at 20. Relaunched, it
  trains no further; with patience 0 it goes on to the end."""
  from train import early_stopping, loop

  config = _tiny_config_in_process(env, monkeypatch)
  config.checkpoint_every = config.eval_every = 5
  config.log_every, config.keep_checkpoints, config.patience = 100, 10, 2
  losses = {5: 1.0, 10: 0.9, 15: 0.95, 20: 0.95}
  monkeypatch.setattr(
    loop, 'run_validation', lambda *a: {'val_loss': losses.get(a[-1], 1.0), 'val_accuracy': 0.0}
  )
  real_save = checkpointing.Checkpointer.save

  class Crash(Exception):
    pass

  def crash_at_20(self, state, *args, **kwargs):
    if int(jax.device_get(state.step)) == 20:
      raise Crash
    return real_save(self, state, *args, **kwargs)

  w, one_device = str(tmp_path), jax.devices()[:1]
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', crash_at_20)
  with pytest.raises(Crash):
    loop.train_and_evaluate(config, w, devices=one_device)
  assert checkpointing.list_steps(w) == [5, 10, 15]
  with open(os.path.join(w, early_stopping.HISTORY_FILE)) as f:
    assert [h['step'] for h in json.load(f)['history']] == [5, 10, 15, 20]

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', real_save)
  with caplog.at_level('WARNING'):
    assert loop.train_and_evaluate(config, w, devices=one_device) == 'stopped_early'
  assert 'early stopping at step 20' in caplog.text
  assert checkpointing.list_steps(w)[-1] == 20
  with open(os.path.join(w, early_stopping.STOPPED_FILE)) as f:
    stopped = json.load(f)
  assert (stopped['step'], stopped['best_step']) == (20, 10)
  assert stopped['best_score'] == pytest.approx(-0.9)
  assert [h['step'] for h in stopped['history']] == [5, 10, 15, 20]

  caplog.clear()
  trained = len(_hashes(w))
  os.remove(os.path.join(w, early_stopping.STOPPED_FILE))  # as if killed before writing it
  with caplog.at_level('WARNING'):
    assert loop.train_and_evaluate(config, w, devices=one_device) == 'stopped_early'
  assert 'stopped early at step 20' in caplog.text and 'not training further' in caplog.text
  with open(os.path.join(w, early_stopping.STOPPED_FILE)) as f:
    assert json.load(f)['step'] == 20
  assert checkpointing.list_steps(w)[-1] == 20 and len(_hashes(w)) == trained == 20

  config.patience = 0
  assert loop.train_and_evaluate(config, w, devices=one_device) == 'done'
  assert checkpointing.list_steps(w)[-1] == 40
  assert not os.path.exists(os.path.join(w, early_stopping.STOPPED_FILE))


def test_patience_from_the_command_line(env, tmp_path):
  """With learning rate 0 the validation loss never improves: patience 1 stops at the second
  validation (step 20) with exit status 0, and a relaunch says so and trains no further."""
  root, e = env
  w = tmp_path / 'w'
  flags = (
    '--config.patience=1',
    '--config.eval_every=10',
    '--config.checkpoint_every=10',
    '--config.optim.learning_rate=0.0',
  )
  p = _run(root, e, w, *flags)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'early stopping at step 20' in p.stderr
  assert checkpointing.list_steps(str(w))[-1] == 20
  assert json.loads((w / 'stopped.json').read_text())['best_step'] == 10
  p = _run(root, e, w, *flags)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'stopped early at step 20' in p.stderr
  assert len(_hashes(w)) == 20 and checkpointing.list_steps(str(w))[-1] == 20


def test_close_all_calls_every_closer_and_returns_the_first_error():
  """A closer that fails (TensorBoard's flush on a full disk) does not skip the ones after it:
  the workdir lock is still released."""
  from train import loop  # pylint: disable=import-outside-toplevel

  called = []

  def fails(name):
    def close():
      called.append(name)
      raise OSError(28, name)

    return close

  first = loop.close_all([fails('writer'), lambda: called.append('iter'), fails('lock')])
  assert called == ['writer', 'iter', 'lock'] and str(first) == '[Errno 28] writer'
  assert loop.close_all([lambda: None]) is None

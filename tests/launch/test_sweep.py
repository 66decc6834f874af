"""launch.sweep: naming, override flags, sweep lookup, and the local/slurm/print backends.

Most tests swap train.main/train.evaluate for tiny stub modules (written to tmp_path) that
checkpoint every step and resume like the real trainer; one slow test runs the real ones.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from launch import sweep, sweep_plan
from train import config_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STUB_TRAIN = '''
"""Stub trainer: one 'checkpoint' per step in WORKDIR/checkpoints/step, resumes from it."""
import json, os, sys, time
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
workdir = args['workdir']
total = int(args.get('config.total_steps', 4))
delay = float(args.get('config.step_seconds', 0))
if args.get('config.fail') == 'True':
    sys.exit('stub: asked to fail')
os.makedirs(os.path.join(workdir, 'checkpoints'), exist_ok=True)
ckpt = os.path.join(workdir, 'checkpoints', 'step')
start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
with open(os.path.join(workdir, 'starts.txt'), 'a') as f:
    f.write(f'{start}\\n')
with open(os.path.join(workdir, 'pid'), 'w') as f:
    f.write(str(os.getpid()))
json.dump({'seed': int(args.get('config.seed', 0)), 'total_steps': total, 'data': {'train_max_len': 3}},
          open(os.path.join(workdir, 'config.json'), 'w'))
from tensorboardX import SummaryWriter
writer = SummaryWriter(os.path.join(workdir, 'tb'))
for step in range(start + 1, total + 1):
    time.sleep(delay)
    writer.add_scalar('train/loss', 1.0 / step, step)
    writer.flush()
    with open(ckpt + '.tmp', 'w') as f:
        f.write(str(step))
    os.replace(ckpt + '.tmp', ckpt)
    os.makedirs(os.path.join(workdir, 'checkpoints', str(step)), exist_ok=True)  # orbax-like
    if step == int(args.get('config.exit_early_at', -1)):
        sys.exit(0)  # like a trainer that saves and exits cleanly on SIGTERM
writer.close()
print('stub: trained to', total)
'''  # noqa: E501

STUB_EVAL = '''
"""Stub evaluate: results JSON whose bleu depends on the seed and the position override."""
import json, os, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
workdir, split = args['workdir'], args['split']
step = int(open(os.path.join(workdir, 'checkpoints', 'step')).read())
cfg = json.load(open(os.path.join(workdir, 'config.json')))
os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
result = {'step': step, 'split': split, 'bleu': 20.0 + cfg['seed'], 'chrf': 50.0, 'loss': 2.0,
          'exact_match': 0.5, 'exact_match_by_length': {'2': {'accuracy': 1.0, 'count': 3},
                                                        '5': {'accuracy': 0.25, 'count': 4}}}
json.dump(result, open(os.path.join(workdir, 'eval', f'{split}-{step}.json'), 'w'))
'''

STUB_CONFIG = """
import ml_collections

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 4
    c.data = ml_collections.ConfigDict({'eval_splits': ['valid']})
    return c

def sweep(name):
    if name == 'smoke':
        return [{'model.position': p, 'seed': s} for p in ('rotary', 'alibi') for s in (0,)]
    if name == 'seeds':
        return [{'model.position': 'rotary', 'seed': s} for s in (1, 2)]
    if name == 'one_fails':
        return [{'seed': 0}, {'seed': 1, 'fail': True}]
    if name == 'preempted':
        return [{'seed': 0, 'exit_early_at': 2}]
    if name == 'slow':
        return [{'seed': 0, 'total_steps': 40, 'step_seconds': 0.05}, {'seed': 1}]
    raise ValueError(f'unknown sweep {name!r}; valid: smoke, seeds, one_fails, slow')
"""


@pytest.fixture()
def stubs(tmp_path):
  """A config with sweeps plus stub train/evaluate modules; returns (config path, env)."""
  pkg = tmp_path / 'stubs'
  pkg.mkdir()
  (pkg / 'stub_train.py').write_text(STUB_TRAIN)
  (pkg / 'stub_eval.py').write_text(STUB_EVAL)
  config = tmp_path / 'stub_config.py'
  config.write_text(STUB_CONFIG)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg), REPO]))
  return str(config), env


def sweep_cli(config, sweep_name, root, env, *extra, wait=True):
  cmd = [
    sys.executable,
    '-m',
    'launch.sweep',
    f'--config={config}',
    f'--sweep={sweep_name}',
    f'--root={root}',
    '--train_module=stub_train',
    '--eval_module=stub_eval',
    *extra,
  ]
  if not wait:
    return subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------- sweep lookup
def test_get_sweep_from_function_dict_and_errors(tmp_path, stubs):
  module = config_file.load_module(stubs[0])
  assert len(sweep_plan.get_sweep(module, 'smoke')) == 2
  with pytest.raises(ValueError, match='valid: smoke'):
    sweep_plan.get_sweep(module, 'nope')
  dict_cfg = tmp_path / 'd.py'
  dict_cfg.write_text("SWEEPS = {'a': [{'seed': 0}], 'dup': [{'seed': 0}, {'seed': 0}]}\n")
  module = config_file.load_module(str(dict_cfg))
  assert sweep_plan.get_sweep(module, 'a') == [{'seed': 0}]
  with pytest.raises(ValueError, match=r"valid choices: \['a', 'dup'\]"):
    sweep_plan.get_sweep(module, 'b')
  with pytest.raises(ValueError, match='same overrides'):
    sweep_plan.get_sweep(module, 'dup')
  with pytest.raises(FileNotFoundError, match='does not exist'):
    config_file.load_module(str(tmp_path / 'missing.py'))


# ---------------------------------------------------------------------------- local backend
def test_local_sweep_runs_reports_and_skips_finished(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  first = sweep_cli(config, 'smoke', root, env, '--parallel=2')
  assert first.returncode == 0, first.stdout + first.stderr
  names = ['model.position-alibi', 'model.position-rotary']  # seed=0 in both: not in the name
  assert sorted(os.listdir(root)) == names
  for name in names:
    done = json.loads((root / name / 'DONE.json').read_text())
    assert done['results'] == {'valid': 'eval/valid-4.json'}
    assert (root / name / 'starts.txt').read_text().split() == ['0']
    spec = json.loads((root / name / 'sweep_run.json').read_text())
    assert f'--workdir={root / name}' in spec['train_cmd']

  report = subprocess.run(
    [sys.executable, '-m', 'launch.report', str(root)],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert report.returncode == 0, report.stderr
  for path in (
    'report.md',
    'report.csv',
    'plots/exact_match-valid.png',
    'plots/length-valid.png',
    'plots/curves-train_loss.png',
  ):
    assert (root / path).stat().st_size > 0, path

  again = sweep_cli(config, 'smoke', root, env)
  assert again.returncode == 0
  assert '2 already done, 0 to run' in again.stdout
  for name in names:  # neither trainer started again
    assert (root / name / 'starts.txt').read_text().split() == ['0']


def test_failed_run_is_reported_and_others_finish(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  result = sweep_cli(config, 'one_fails', root, env)
  assert result.returncode == 1
  assert 'failed: train exited with 1: fail-True__seed-1' in result.stdout
  assert (root / 'seed-0' / 'DONE.json').exists()
  assert not (root / 'fail-True__seed-1' / 'DONE.json').exists()
  assert 'stub: asked to fail' in (root / 'fail-True__seed-1' / 'sweep.log').read_text()


def test_clean_exit_before_total_steps_is_not_marked_done(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  result = sweep_cli(config, 'preempted', root, env)
  assert result.returncode == 1
  assert 'failed: training stopped at step 2 of 4' in result.stdout
  assert not (root / 'exit_early_at-2__seed-0' / 'DONE.json').exists()
  assert not (root / 'exit_early_at-2__seed-0' / 'eval').exists()  # not evaluated either


def test_killed_run_resumes_on_rerun(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  slow = root / 'seed-0__step_seconds-0.05__total_steps-40'
  proc = sweep_cli(config, 'slow', root, env, '--parallel=2', wait=False)
  ckpt = slow / 'checkpoints' / 'step'
  deadline = time.time() + 60
  while not (ckpt.exists() and int(ckpt.read_text() or 0) >= 3):
    assert time.time() < deadline and proc.poll() is None, 'slow run never checkpointed'
    time.sleep(0.05)
  os.kill(int((slow / 'pid').read_text()), signal.SIGKILL)  # the trainer dies mid-run
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 1, out
  assert 'failed: train exited with -9' in out
  assert (root / 'seed-1' / 'DONE.json').exists() and not (slow / 'DONE.json').exists()

  rerun = sweep_cli(config, 'slow', root, env)
  assert rerun.returncode == 0, rerun.stdout
  starts = [int(s) for s in (slow / 'starts.txt').read_text().split()]
  assert starts[0] == 0 and starts[1] >= 3  # picked up from its checkpoint, not from scratch
  assert json.loads((slow / 'DONE.json').read_text())['results'] == {'valid': 'eval/valid-40.json'}
  assert (root / 'seed-1' / 'starts.txt').read_text().split() == ['0']  # finished run skipped


def test_sigterm_stops_running_trainers(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  slow = root / 'seed-0__step_seconds-0.05__total_steps-40'
  proc = sweep_cli(config, 'slow', root, env, wait=False)
  deadline = time.time() + 60
  while not (slow / 'checkpoints' / 'step').exists():
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 1 and 'stopped' in out
  pid = int((slow / 'pid').read_text())
  with pytest.raises(ProcessLookupError):  # the trainer is gone too
    os.kill(pid, 0)
  assert not (root / 'seed-1').exists() or not (root / 'seed-1' / 'DONE.json').exists()


# ---------------------------------------------------------------------------- slurm / print
def _plan(stubs, root, name='smoke'):
  module = config_file.load_module(stubs[0])
  return sweep_plan.plan_runs(
    config=stubs[0],
    sweep_runs=sweep_plan.get_sweep(module, name),
    root=str(root),
    eval_splits=['valid'],
    train_module='stub_train',
    eval_module='stub_eval',
  )


def test_slurm_script_is_valid_bash_with_one_command_per_run(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  result = sweep_cli(config, 'smoke', root, env, '--backend=slurm', '--slurm_time=01:00:00')
  assert result.returncode == 0, result.stderr
  script = (root / 'sweep.sbatch').read_text()
  assert 'sbatch ' in result.stdout
  assert subprocess.run(['bash', '-n', str(root / 'sweep.sbatch')]).returncode == 0
  assert '#SBATCH --array=0-1' in script and '#SBATCH --time=01:00:00' in script
  runs = _plan(stubs, root)
  for run in runs:
    assert script.count(shlex.join(run.train_cmd)) == 1
    assert script.count(shlex.join(run.eval_cmds[0])) == 1
  # Task 1 run by hand does exactly run 1.
  task = subprocess.run(
    ['bash', str(root / 'sweep.sbatch')],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=dict(env, SLURM_ARRAY_TASK_ID='1'),
    timeout=120,
  )
  assert task.returncode == 0, task.stderr
  assert (root / runs[1].name / 'DONE.json').exists() and not (
    root / runs[0].name / 'DONE.json'
  ).exists()


def test_slurm_multinode_uses_srun_and_multihost(tmp_path, stubs):
  runs = _plan(stubs, tmp_path)
  script = sweep.slurm_script(
    runs, root=str(tmp_path), sweep='smoke', eval_splits=['valid'], nodes=4, gpus_per_node=8
  )
  assert '#SBATCH --nodes=4' in script and '#SBATCH --gpus-per-node=8' in script
  for run in runs:
    line = shlex.join(
      [
        'srun',
        '--ntasks-per-node=1',
        sys.executable,
        '-m',
        'launch.multihost',
        '--',
        *run.train_cmd,
      ]
    )
    assert script.count(line) == 1
  path = tmp_path / 's.sbatch'
  path.write_text(script)
  assert subprocess.run(['bash', '-n', str(path)]).returncode == 0


def test_print_backend_prints_commands_and_touches_nothing(tmp_path, stubs):
  config, env = stubs
  result = sweep_cli(config, 'seeds', tmp_path / 'root', env, '--backend=print')
  assert result.returncode == 0
  for run in _plan(stubs, tmp_path / 'root', 'seeds'):
    assert shlex.join(run.train_cmd) in result.stdout
  assert not (tmp_path / 'root').exists()


def test_cli_errors_are_one_line_and_root_reuse_is_refused(tmp_path, stubs):
  config, env = stubs
  root = tmp_path / 'root'
  unknown = sweep_cli(config, 'nope', root, env)
  assert unknown.returncode == 2 and unknown.stderr.strip().startswith(
    "error: unknown sweep 'nope'"
  )
  assert sweep_cli(config, 'seeds', root, env).returncode == 0
  # Same run names, different training command: must not skip or resume those workdirs.
  clash = sweep_cli(config, 'seeds', root, env, '--set=total_steps=5')
  assert clash.returncode == 2 and 'pick another --root' in clash.stderr
  assert 'Traceback' not in clash.stderr

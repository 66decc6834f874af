"""The fault campaign (launch/faults.py, fault_campaign.py, fault_trials.py) at test size: one
broken checkpoint item through train, evaluate and translate, a full disk during a save
(simulated, and as root a real tmpfs that fills partway through a save) and a read-only workdir.
The full campaign (20 kill -9, 5 SIGTERM, every item, every bad input) is
`python -m launch.faults --out=DIR`; its table is in the README. kill -9 and SIGTERM resumes
have their own tests in test_main.py."""

import pytest

from launch import fault_campaign, fault_trials, faults
from tests.xla_flags import xla_flags


@pytest.mark.slow
def test_broken_params_and_full_disk_are_survived(tmp_path):
  campaign = fault_campaign.Campaign(str(tmp_path), xla_flags=xla_flags(1))
  campaign.reference()
  fault_trials.checkpoint_item_trials(campaign, [('params', 'truncated')])
  fault_trials.full_disk_trial(campaign)
  fault_trials.full_disk_tmpfs_trial(campaign)  # as root: a private mount namespace (unshare)
  fault_trials.read_only_trial(campaign)  # as root: a read-only bind mount (unshare)
  tallies = {t.fault: t for t in campaign.tallies.values()}
  assert set(tallies) == {
    'newest checkpoint params truncated: train',
    'newest checkpoint params truncated: evaluate',
    'newest checkpoint params truncated: translate',
    'full disk during a save',
    'full disk during a save (a real tmpfs)',
    'read-only workdir',
  }
  read_only = tallies.pop('read-only workdir')
  tmpfs = tallies.pop('full disk during a save (a real tmpfs)')
  if fault_trials.read_only_method() is None:  # root in a sandbox that forbids unshare
    assert read_only.trials == 0 and 'skipped' in read_only.notes[0]
  else:
    assert (read_only.trials, read_only.survived) == (1, 1), read_only.notes
  if fault_trials.read_only_method() != 'mount':  # not root, or no unshare: cannot mount
    assert tmpfs.trials == 0 and 'skipped' in tmpfs.notes[0]
  else:
    assert (tmpfs.trials, tmpfs.survived, tmpfs.data_lost) == (1, 1, 0), tmpfs.notes
  for t in tallies.values():
    assert (t.trials, t.survived, t.data_lost) == (1, 1, 0), (t.fault, t.notes)
  text = faults.markdown(list(tallies.values()), 1.0)
  assert '| full disk during a save | 1 | 1 | 0 |' in text and '4 of 4 trials survived' in text

"""The fault campaign (launch/faults.py) at test size: one broken checkpoint item through train,
evaluate and translate, and a full disk during a save. The full campaign (20 kill -9, 5 SIGTERM,
every item, every bad input) is `python -m launch.faults --out=DIR`; its table is in the README.
kill -9 and SIGTERM resumes have their own tests in test_main.py."""

import pytest

from launch import faults
from tests.xla_flags import xla_flags


@pytest.mark.slow
def test_broken_params_and_full_disk_are_survived(tmp_path):
  campaign = faults.Campaign(str(tmp_path), xla_flags=xla_flags(1))
  campaign.reference()
  campaign.checkpoint_item_trials([('params', 'truncated')])
  campaign.full_disk_trial()
  tallies = {t.fault: t for t in campaign.tallies.values()}
  assert set(tallies) == {
    'newest checkpoint params truncated: train',
    'newest checkpoint params truncated: evaluate',
    'newest checkpoint params truncated: translate',
    'full disk during a save',
  }
  for t in tallies.values():
    assert (t.trials, t.survived, t.data_lost) == (1, 1, 0), (t.fault, t.notes)
  text = faults.markdown(list(tallies.values()), 1.0)
  assert '| full disk during a save | 1 | 1 | 0 |' in text and '4 of 4 trials survived' in text

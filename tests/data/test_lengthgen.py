"""lengthgen: task correctness, determinism, split lengths, builder counts and stored lengths."""

import collections

import pytest

from data_testutil import make_config
from train import data
from train.data import lengthgen


@pytest.mark.parametrize('task', sorted(lengthgen.TASKS))
def test_targets_follow_the_task(task):
  examples = lengthgen.generate(task, 'test', 80, train_max_len=5, test_max_len=20, seed=3)
  for ex in examples:
    s, t, n = ex['source'], ex['target'], ex['length']
    if task.startswith('addition'):
      a, b = s.split('+')
      if task == 'addition_reversed':  # least significant digit first, everywhere
        a, b, t = a[::-1], b[::-1], t[::-1]
      assert len(a) == len(b) == n and int(t) == int(a) + int(b) and str(int(t)) == t
      assert n == 1 or (a[0] != '0' and b[0] != '0')
    else:
      assert len(s) == n and set(s) <= set(lengthgen.SYMBOLS)
      expected = {'copy': s, 'reverse': s[::-1], 'sort': ''.join(sorted(s)), 'duplicate': s + s}[
        task
      ]
      assert t == expected


def test_deterministic_from_seed():
  a = lengthgen.generate('reverse', 'train', 50, seed=7)
  assert a == lengthgen.generate('reverse', 'train', 50, seed=7)
  assert a != lengthgen.generate('reverse', 'train', 50, seed=8)
  assert a != lengthgen.generate('copy', 'train', 50, seed=7)  # tasks draw different streams


def test_adding_a_task_leaves_the_other_tasks_examples_unchanged():
  # Pinned from the generator as it was before addition_reversed existed (studies depend on it).
  got = [e['source'] for e in lengthgen.generate('copy', 'train', 3, seed=0)]
  assert got == ['ktpphyedeecjchqnjt', 'xwyaifesj', 'h']


def test_reversed_addition_is_addition_with_the_same_operands_reversed():
  plain = lengthgen.generate('addition', 'test', 60, seed=5)
  rev = lengthgen.generate('addition_reversed', 'test', 60, seed=5)
  for p, r in zip(plain, rev):
    assert r['length'] == p['length'] and r['target'] == p['target'][::-1]
    assert r['source'] == '+'.join(x[::-1] for x in p['source'].split('+'))


def test_long_addition_is_exact():
  ex = lengthgen.generate('addition', 'test', 30, train_max_len=20, test_max_len=30)[-1]
  a, b = ex['source'].split('+')
  assert ex['length'] == 30 and len(a) == 30 and int(ex['target']) == int(a) + int(b)


def test_split_lengths():
  train = [e['length'] for e in lengthgen.generate('copy', 'train', 2000, train_max_len=20)]
  assert min(train) == 1 and max(train) == 20
  val = [e['length'] for e in lengthgen.generate('copy', 'validation', 200, train_max_len=20)]
  assert collections.Counter(val) == {n: 10 for n in range(1, 21)}
  test = [
    e['length'] for e in lengthgen.generate('copy', 'test', 400, train_max_len=20, test_max_len=40)
  ]
  assert collections.Counter(test) == {n: 10 for n in range(1, 41)}


def test_builder_counts_order_and_lengths():
  config = make_config(
    name='lengthgen',
    task='sort',
    train_max_len=6,
    test_max_len=12,
    num_train=300,
    num_eval=48,
    lengthgen_seed=1,
  )
  builder = data.build(config)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
    'train': 300,
    'validation': 48,
    'test': 48,
  }
  test = data.load_examples(config, 'test')
  assert test == lengthgen.generate('sort', 'test', 48, train_max_len=6, test_max_len=12, seed=1)
  assert max(ex['length'] for ex in test) == 12
  assert max(ex['length'] for ex in data.load_examples(config, 'train')) <= 6


def test_bad_settings_are_explained():
  with pytest.raises(ValueError, match='valid choices'):
    lengthgen.generate('multiply', 'train', 3)
  with pytest.raises(ValueError, match='train_max_len <= test_max_len'):
    data.build(make_config(name='lengthgen', train_max_len=10, test_max_len=5))

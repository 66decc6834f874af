r"""word2vec side by side: attnlab (JAX) vs gensim, same corpus and settings, in one run.

  python launch/word2vec_benchmark.py --out=workdirs/w2v_bench \
      --gensim_python=/tmp/gensim-venv/bin/python [--epochs=5] [--objectives=cbow,skipgram]

gensim is a comparison only, never a dependency: it runs in its own interpreter (a separate venv
with `pip install gensim`), via this same file in `--worker` mode, which imports nothing but the
standard library and gensim. Settings: dim 100, window 5, negative 5, sample 1e-3, min_count 5,
linear lr 0.025 -> 1e-4, 2 gensim worker threads. Words/s = raw corpus words x epochs / training
seconds (vocabulary building excluded on both sides); words/CPU-s divides by the CPU time of all
the process's threads instead, which stays comparable when other jobs share the machine. Both
vector sets are scored by the same code (train/word_eval.py); gensim's own scores are recorded as
a cross-check of that code.
Writes OUT/report.md and OUT/report.json, runs in the order gensim, attnlab per objective.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(
  vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025, min_alpha=1e-4
)


def gensim_worker(args):
  """Runs inside the gensim venv: train, time, export vectors, gensim's own evaluation."""
  import logging  # pylint: disable=import-outside-toplevel
  from gensim.models import Word2Vec  # pylint: disable=import-outside-toplevel

  logging.basicConfig(level=logging.WARNING)
  with gzip.open(args.corpus, 'rt', encoding='utf-8') as f:
    sentences = [line.split() for line in f if line.strip()]
  raw = sum(map(len, sentences))
  model = Word2Vec(
    sg=int(args.objective == 'skipgram'), workers=args.threads, seed=args.seed, **SETTINGS
  )
  t0 = time.time()
  model.build_vocab(sentences)
  vocab_s = time.time() - t0
  t0, cpu0 = time.time(), time.process_time()
  model.train(sentences, total_examples=len(sentences), epochs=args.epochs)
  train_s, train_cpu = time.time() - t0, time.process_time() - cpu0
  os.makedirs(args.out, exist_ok=True)
  model.wv.save_word2vec_format(os.path.join(args.out, 'vectors.txt'), binary=False)
  ws = model.wv.evaluate_word_pairs(os.path.join(args.word_eval, 'wordsim353.tsv'))
  an = model.wv.evaluate_word_analogies(os.path.join(args.word_eval, 'questions-words.txt'))
  result = {
    'words_per_s': raw * args.epochs / train_s,
    'train_seconds': train_s,
    'train_cpu_seconds': train_cpu,
    'vocab_seconds': vocab_s,
    'vocab_size': len(model.wv),
    'raw_words_per_epoch': raw,
    'gensim_own_wordsim353': float(ws[1].statistic if hasattr(ws[1], 'statistic') else ws[1][0]),
    'gensim_own_wordsim353_oov': ws[2] / 100,
    'gensim_own_analogy': float(an[0]),
  }
  with open(os.path.join(args.out, 'gensim.json'), 'w') as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result))


def run_gensim(args, objective, out):
  cmd = [
    args.gensim_python,
    os.path.abspath(__file__),
    '--worker',
    f'--objective={objective}',
    f'--epochs={args.epochs}',
    f'--out={out}',
    f'--corpus={args.corpus}',
    f'--word_eval={args.word_eval}',
    f'--threads={args.threads}',
  ]
  subprocess.run(cmd, check=True)
  with open(os.path.join(out, 'gensim.json')) as f:
    result = json.load(f)
  sys.path.insert(0, ROOT)
  from train import word_eval  # pylint: disable=import-outside-toplevel

  words, vectors = word_eval.load_word2vec_format(os.path.join(out, 'vectors.txt'))
  data_dir = os.path.dirname(args.word_eval)
  result.update(word_eval.wordsim(words, vectors, data_dir=data_dir))
  result.update(word_eval.analogy(words, vectors, data_dir=data_dir))
  return result


def run_attnlab(args, objective, out):
  cmd = [
    os.path.join(ROOT, '.venv', 'bin', 'python'),
    '-m',
    'train.word2vec',
    f'--config={os.path.join(ROOT, "configs", "word2vec.py")}:objective={objective}',
    f'--config.optim.epochs={args.epochs}',
    f'--workdir={out}',
  ] + args.extra
  subprocess.run(cmd, check=True, cwd=ROOT)
  with open(os.path.join(out, 'results.json')) as f:
    return json.load(f)


COLUMNS = [
  ('words_per_s', 'words/s', '{:,.0f}'),
  ('words_per_cpu_s', 'words/CPU-s', '{:,.0f}'),
  ('wordsim353', 'WordSim353', '{:.3f}'),
  ('wordsim353_oov', 'WS OOV', '{:.1%}'),
  ('analogy', 'analogy', '{:.1%}'),
  ('analogy_semantic', 'sem', '{:.1%}'),
  ('analogy_syntactic', 'syn', '{:.1%}'),
  ('analogy_coverage', 'coverage', '{:.1%}'),
  ('vocab_size', 'vocab', '{:,}'),
]


def report(rows, args) -> str:
  lines = [
    f'word2vec benchmark: {args.epochs} epochs, dim 100, window 5, negative 5, sample 1e-3,'
    f' min_count 5; load average before/after each run in the last column.',
    '',
    '| objective | system | ' + ' | '.join(c[1] for c in COLUMNS) + ' | load |',
    '|---' * (len(COLUMNS) + 3) + '|',
  ]
  for r in rows:
    cells = [fmt.format(r[k]) if r.get(k) is not None else '-' for k, _, fmt in COLUMNS]
    lines.append(f'| {r["objective"]} | {r["system"]} | ' + ' | '.join(cells) + f' | {r["load"]} |')
  for objective in dict.fromkeys(r['objective'] for r in rows):
    pair = {r['system']: r for r in rows if r['objective'] == objective}
    if len(pair) == 2:
      ratio = pair['attnlab']['words_per_s'] / pair['gensim']['words_per_s']
      lines.append(f'\n{objective}: attnlab / gensim words/s = {ratio:.2f}')
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='workdirs/w2v_bench')
  parser.add_argument('--gensim_python', default='/tmp/gensim-venv/bin/python')
  parser.add_argument('--epochs', type=int, default=5)
  parser.add_argument('--objectives', default='cbow,skipgram')
  parser.add_argument('--systems', default='gensim,attnlab')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  data = os.environ.get('ATTNLAB_DATA_DIR', os.path.join(ROOT, '..', 'shared', 'data'))
  parser.add_argument('--corpus', default=os.path.join(data, 'text', 'en_15m.txt.gz'))
  parser.add_argument('--word_eval', default=os.path.join(data, 'word_eval'))
  parser.add_argument('--worker', action='store_true', help='internal: the gensim side')
  parser.add_argument('--objective', default='cbow', help='internal: worker objective')
  args, args.extra = parser.parse_known_args()  # extra: --config.X=Y passed to train.word2vec
  if args.worker:
    return gensim_worker(args)
  os.makedirs(args.out, exist_ok=True)
  sys.path.insert(0, ROOT)
  from train.layout import write_atomic  # pylint: disable=import-outside-toplevel

  rows = []
  for objective in args.objectives.split(','):
    for system in args.systems.split(','):
      out = os.path.abspath(os.path.join(args.out, f'{system}_{objective}'))
      load = f'{os.getloadavg()[0]:.1f}'
      result = (run_gensim if system == 'gensim' else run_attnlab)(args, objective, out)
      load += f'/{os.getloadavg()[0]:.1f}'
      result = {k: v for k, v in result.items() if k != 'history'}
      if result.get('train_cpu_seconds'):
        result['words_per_cpu_s'] = (
          result['raw_words_per_epoch'] * args.epochs / result['train_cpu_seconds']
        )
      rows.append({'objective': objective, 'system': system, 'load': load, **result})
      write_atomic(os.path.join(args.out, 'report.json'), json.dumps(rows, indent=2).encode())
      write_atomic(os.path.join(args.out, 'report.md'), report(rows, args).encode())
      print(report(rows, args), flush=True)


if __name__ == '__main__':
  main()

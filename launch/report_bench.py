"""The tables of launch.benchmark and launch.peer: their results dicts in, Markdown out.

Beside launch/report.py (sweep tables) because these are reports too; the measuring stays in
launch/benchmark.py, launch/peer.py and launch/measure.py.
"""

from __future__ import annotations

from launch import op_profile


def format_ratio(p, digits=2):
  """A `measure.pair_ratios` result as 'median x [q1-q3]', the form every paired table uses."""
  return f'{p["median"]:.{digits}f}x [{p["q1"]:.{digits}f}-{p["q3"]:.{digits}f}]'


def _fmt(v, spec):
  return '-' if v is None else format(v, spec)


def benchmark_tables(result):
  """launch.benchmark's Markdown tables: training, then decoding (then op-time shares)."""
  lines = [
    f'{result["date"]} | {result["machine"]["description"]} | peak '
    f'{result["peak_flops_per_s"] / 1e9:.1f} GFLOP/s ({result["peak_source"]})',
    '',
    '| setting | params | compile s | shapes | step ms | host ms | tok/step | real tok/s | pad % '
    '| GFLOP/s | matmul GFLOP/s | MFU | exec MFU | CPU-time MFU | cost/token | peak mem MB '
    '| faults/step |',
    '|---' * 17 + '|',
  ]
  base = None
  for r in result['runs']:
    t = r.get('train')
    if t is None:
      lines.append(
        f'| {r["setting"]} | {"error: " + r["error"] if "error" in r else "not timed"} |'
      )
      continue
    mem = t['peak_memory_bytes'] / 2**20 if t['peak_memory_bytes'] else None
    # Step CPU time in matmul-equivalents per real token: comparable across settings even when
    # the machine's load changed between them. 1.00 = the first setting.
    cost = (
      t.get('step_matmul_equiv_cpu', t['step_s'] * result['peak_flops_per_s'])
      / t['target_tokens_per_step']
    )
    base = base or cost
    ref = t.get('matmul_flops_per_s')
    faults = t.get('minor_faults_per_step')  # absent from results written before it existed
    lines.append(
      f'| {r["setting"]} | {t["params"] / 1e6:.2f}M | {t["compile_s"]:.1f} | {t["num_shapes"]} | '
      f'{1e3 * t["step_s"]:.0f} | {1e3 * t["host_s"]:.1f} | {t["target_tokens_per_step"]:.0f} | '
      f'{t["tokens_per_s"]:,.0f} | {100 * t["padding_fraction"]:.1f} | '
      f'{t["flops_per_s"] / 1e9:.1f} | {_fmt(ref and ref / 1e9, ".1f")} | {100 * t["mfu"]:.1f}% | '
      f'{100 * t["executed_mfu"]:.1f}% | {_fmt(t.get("cpu_time_mfu", 0) * 100 or None, ".1f")}'
      f' | {cost / base:.2f} | {_fmt(mem, ".0f")} | {_fmt(faults, ",.0f")} |'
    )
  dec = [r for r in result['runs'] if r.get('decode')]
  if dec:
    keys = [k for k in dec[0]['decode'] if 'speedup' not in k]
    lines += [
      '',
      '| setting | '
      + ' | '.join(f'{k} sent/s (tok/s)' for k in keys)
      + ' | speed-up (uncached / cached) |',
      '|---' * (len(keys) + 2) + '|',
    ]
    for r in dec:
      d = r['decode']
      cells = [
        f'{d[k]["sentences_per_s"]:.1f} ({d[k]["tokens_per_s"]:,.0f})' if k in d else '-'
        for k in keys
      ]
      speed = ', '.join(
        f'{k[:-8]} {v:.1f}x (CPU time {d.get(k + "_cpu_time", 0):.1f}x)'
        for k, v in d.items()
        if k.endswith('speedup')
      )
      lines.append(f'| {r["setting"]} | ' + ' | '.join(cells) + f' | {speed or "-"} |')
  prof = [r for r in result['runs'] if r.get('train', {}).get('op_time_s')]
  if prof:
    cats = sorted(
      {c for r in prof for c in r['train']['op_time_s']},
      key=lambda c: -sum(r['train']['op_time_s'].get(c, 0) for r in prof),
    )
    lines += [
      '',
      'Share of op time (3 profiled steps, all compute threads):',
      '',
      '| part | ' + ' | '.join(r['setting'] for r in prof) + ' |',
      '|---' * (len(prof) + 1) + '|',
    ]
    share = [op_profile.shares(r['train']['op_time_s']) for r in prof]
    for c in cats:
      lines.append(f'| {c} | ' + ' | '.join(f'{100 * s.get(c, 0):.1f}%' for s in share) + ' |')
  for r in result['runs']:
    if r.get('error') and r.get('train'):
      lines.append(f'{r["setting"]}: error: {r["error"]}')
  if result.get('paired'):
    lines += ['', *paired_table(result['paired'], result['args'])]
  return '\n'.join(lines)


def paired_table(rows, args):
  """launch.benchmark --pairs: each setting's speed-up over the first, median [quartiles] of the
  pairs (> 1: faster than the baseline)."""
  keys = sorted(
    {k for r in rows for k in r if isinstance(r[k], dict)}, key=lambda k: (k != 'train', k)
  )
  head = {'train': f'train ({args["pairs"]} pairs)'}
  lines = [
    f'Paired against {rows[0]["baseline"]}: speed-up per pair, median [quartiles] (train: per '
    'real target token; decode: per call)',
    '',
    '| setting | '
    + ' | '.join(head.get(k, f'{k} ({args["decode_pairs"]} pairs)') for k in keys)
    + ' |',
    '|---' * (len(keys) + 1) + '|',
  ]
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["setting"]} | error: {r["error"]} |')
      continue
    cells = [format_ratio(r[k], 3) if k in r else '-' for k in keys]
    lines.append(f'| {r["setting"]} | ' + ' | '.join(cells) + ' |')
  return lines


def peer_rows(decodes, peak):
  """(label, part, key, format) of each row of the side-by-side table: training, then one row
  per decode measure of `decodes` (`launch.peer.decodes_of`: name, method, beam width, inputs)."""
  cpu = peak is None
  rows = [
    ('train, real target tokens/s', 'train', 'tokens_per_s', ',.0f'),
    (
      'train MFU' + (' (CPU time, vs a float32 matmul)' if cpu else ''),
      'train',
      'cpu_time_mfu' if cpu else 'mfu',
      '.1%',
    ),
  ]
  for name, method, width, inputs in decodes:
    n = inputs['inputs'].shape[0]
    what = f'beam-{width} decode' if method == 'beam' else 'greedy decode (flax wmt: beam 1)'
    label = f'{what}, {n} sentence{"s" if n > 1 else ""}, sentences/s'
    rows.append((label, name, 'sentences_per_s', ',.1f'))
  return rows


PAIRED_KEYS = ('tokens_per_s', 'sentences_per_s')  # the rows launch.peer also times in pairs


def peer_table(result, rows):
  """launch.peer's side-by-side table of `rows` (`peer_rows`), with the setup line; with a
  column of paired ratios when the run timed pairs (`launch.peer.paired`)."""
  s = result['setup']
  paired = result.get('paired')
  lines = [
    f'{result["date"]} | {result["machine"]["description"]} | {s["rows"]} rows x '
    f'{s["row_len"]} tokens, vocab {s["vocab_size"]}, d {s["d_model"]}, {s["layers"]}+'
    f'{s["layers"]} layers, {s["heads"]} heads, FFN {s["d_ff"]}, {s["dtype"]} | params '
    f'attnlab {s["params"]["attnlab"] / 1e6:.2f}M, flax wmt '
    f'{s["params"]["flax_wmt"] / 1e6:.2f}M | best of {result["args"]["repeats"]} '
    'interleaved rounds'
    + (
      "; paired: steps / calls alternated one by one, median [quartiles] of the pairs' speed-ups"
      if paired
      else ''
    ),
    '',
    '| measure | attnlab | flax wmt | ratio |' + (' paired ratio |' if paired else ''),
    '|---|---|---|---|' + ('---|' if paired else ''),
  ]
  for label, part, key, spec in rows:
    a = result['best']['attnlab'][part].get(key)
    b = result['best']['flax_wmt'][part].get(key)
    ratio = result['ratios'][f'{part}.{key}']
    cell = lambda v: '-' if v is None else format(v, spec)
    line = f'| {label} | {cell(a)} | {cell(b)} | {"-" if ratio is None else f"{ratio:.2f}x"} |'
    if paired:
      p = paired.get(part) if key in PAIRED_KEYS else None
      line += f' {format_ratio(p)}, {p["pairs"]} pairs |' if p else ' - |'
    lines.append(line)
  return '\n'.join(lines)

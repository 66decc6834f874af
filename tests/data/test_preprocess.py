"""config.data.preprocess='lc_norm_tok': the Multi30K builder stores processed text plus the raw
lines, in its own cache location, with its own tokenizer; raw builds stay as they were."""

import pytest

from data_testutil import make_config, write_multi30k
from train import data
from train.data import datasets
from train.data import moses

# Punctuation the processing changes: quotes, apostrophes (escaped), '&', final period, case.
PAIRS = [
  ('A man\'s hat & a "sign".', "Ein Mann hält ein Schild: „Come on now ... what's up.“"),
  ('Two dogs play in the snow.', 'Zwei Hunde spielen im Schnee.'),
  ('A woman (in red) sings.', 'Eine Frau (in Rot) singt & tanzt.'),
  ('Kids play football.', 'Kinder spielen Fußball.'),
]


def _config(root, preprocess=None, **kw):
  extra = {} if preprocess is None else {'preprocess': preprocess}
  return make_config(name='multi30k', src='en', tgt='de', data_dir=str(root), **extra, **kw)


def test_processed_variant_has_processed_text_raw_references_and_its_own_caches(
  tmp_path, tmp_build
):
  write_multi30k(tmp_path, {'train': PAIRS, 'val': PAIRS[:2]})
  raw_cfg, lit_cfg = _config(tmp_path), _config(tmp_path, 'lc_norm_tok')
  raw_builder, lit_builder = data.build(raw_cfg), data.build(lit_cfg)
  assert raw_builder.builder_config.name == 'en-de'
  assert lit_builder.builder_config.name == 'en-de-lc_norm_tok'
  assert 'sacremoses' in str(lit_builder.data_dir)
  assert str(raw_builder.data_dir) != str(lit_builder.data_dir)
  assert not str(lit_builder.data_dir).startswith(str(raw_builder.data_dir))

  raw = data.load_examples(raw_cfg, 'train')
  assert raw[0] == {'index': 0, 'source': PAIRS[0][0], 'target': PAIRS[0][1]}  # unchanged
  lit = data.load_examples(lit_cfg, 'train')
  assert [ex['index'] for ex in lit] == list(range(len(PAIRS)))
  for ex, (en, de) in zip(lit, PAIRS):
    assert ex['source'] == moses.process(en, 'en') and ex['target'] == moses.process(de, 'de')
    assert ex['source_raw'] == en and ex['target_raw'] == de
  assert lit[0]['source'] == 'a man &apos;s hat &amp; a &quot; sign . &quot;'  # en: period inside
  assert lit[0]['target'].endswith('what &apos; s up &quot; .')  # period after the quote, as Perl

  # Tokenizers: one per variant, never the same cache entry.
  data.get_tokenizer(raw_cfg.copy_and_resolve_references())
  lit_tok = data.get_tokenizer(_config(tmp_path, 'lc_norm_tok', tokenizer='char'))
  names = sorted(p.name for p in (tmp_build / 'tokenizers').iterdir())
  assert len(names) == 2 and sum('-lc_norm_tok-' in n for n in names) == 1
  batches = data.make_eval_batches(
    _config(tmp_path, 'lc_norm_tok', tokenizer='char'), lit_tok, 'val'
  )
  decoded = {
    int(i): lit_tok.decode(t) for b in batches for i, t in zip(b['index'], b['targets']) if i >= 0
  }
  assert decoded == {0: lit[0]['target'], 1: lit[1]['target']}  # the model learns processed text

  # Scoring such a model: processed hypotheses vs processed targets (literature BLEU), their
  # detokenization vs the raw references (sacreBLEU).
  from train import decode_text  # pylint: disable=import-outside-toplevel

  opts = decode_text.target_text(lit_cfg)
  assert opts == {'lang': 'de', 'processed': True}
  assert decode_text.target_text(raw_cfg) == {'lang': 'de', 'processed': False}
  examples = {ex['index']: ex for ex in lit}
  result = decode_text.score({i: ex['target'] for i, ex in examples.items()}, examples, **opts)
  assert result['bleu_lit'] == pytest.approx(100.0)
  assert 0 < result['bleu'] < 100  # cased sacreBLEU: lowercased output loses the capitals
  assert decode_text.readable(lit_cfg, [lit[0]['target']]) == [
    'ein mann hält ein schild: "come on now... what \'s up".'
  ]
  assert decode_text.model_text(lit_cfg, [PAIRS[1][0]], 'source') == [lit[1]['source']]
  with pytest.raises(ValueError, match='target_raw'):
    decode_text.score({0: 'x'}, {0: {'target': 'x'}}, **opts)


def test_bad_or_misplaced_preprocess_is_named(tmp_path):
  with pytest.raises(ValueError, match=r"preprocess 'bogus'.*'raw', 'lc_norm_tok'"):
    datasets.builder_key(_config(tmp_path, 'bogus'))
  with pytest.raises(ValueError, match='multi30k only'):
    datasets.builder_key(make_config(name='lengthgen', preprocess='lc_norm_tok'))
  assert datasets.preprocess_of(_config(tmp_path)) == 'raw'  # configs without the key

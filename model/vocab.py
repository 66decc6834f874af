"""The special token ids that every tokenizer (train/data/tokenizer.py) and every model and
decoder agree on. Defined here only."""

PAD, EOS, BOS, UNK = 0, 1, 2, 3

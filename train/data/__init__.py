"""Data: tfds builders (multi30k, lengthgen, text), tokenizers, grain pipelines.

The names below are the package's contract (docs/contracts.md, `train/data/`).
"""
from train.data.datasets import build
from train.data.datasets import load_examples
from train.data.pipeline import make_eval_batches
from train.data.pipeline import make_train_iterator
from train.data.text import load_text_lines
from train.data.tokenizer import BOS, EOS, PAD, UNK
from train.data.tokenizer import get_tokenizer
from train.data.tokenizer import load_tokenizer

__all__ = [
    "BOS", "EOS", "PAD", "UNK", "build", "get_tokenizer", "load_examples", "load_text_lines",
    "load_tokenizer", "make_eval_batches", "make_train_iterator",
]

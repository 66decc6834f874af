"""Shared base of the project's tfds builders."""

from __future__ import annotations

from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder kept out of tfds's global registry (no name clashes, re-importable).

  Writes array_record files, which `as_data_source()` reads without TensorFlow.
  """

  # tfds's default `code_path` probes the `importlib_resources` backport for builders defined in
  # a package, and that backport is not installed on Python >= 3.9; the module file is the answer.
  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

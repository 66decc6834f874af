"""Tests for launch/plots.py: every figure is a real PNG of FIGSIZE * DPI pixels."""
import numpy as np
import pytest
from PIL import Image

from launch import plots

EXPECTED = (int(plots.FIGSIZE[0] * plots.DPI), int(plots.FIGSIZE[1] * plots.DPI))


def _check_png(path):
  assert plots.read_png_size(path) == EXPECTED
  with Image.open(path) as im:
    assert im.size == EXPECTED
    pixels = np.asarray(im.convert("L"), np.float32)
  # Non-empty: a drawn figure has many distinct grey levels, a blank canvas has one.
  assert len(np.unique(pixels)) > 20
  assert pixels.std() > 5


def test_heatmaps_and_curves(tmp_path):
  rng = np.random.default_rng(0)
  _check_png(plots.plot_heatmaps(
      str(tmp_path / "h.png"), rng.normal(size=(5, 6, 7)), [f"m{i}" for i in range(5)],
      suptitle="t", xlabel="x", ylabel="y", colorbar_label="c"))
  x = np.arange(-10, 11)
  _check_png(plots.plot_curves(str(tmp_path / "c.png"), x, {"a": np.cos(x), "b": np.sin(x)},
                               title="t", xlabel="x", ylabel="y"))


def test_cross_attention_and_bias_figures(tmp_path):
  rng = np.random.default_rng(1)
  w = rng.random((2, 4, 6, 5))
  w /= w.sum(-1, keepdims=True)
  _check_png(plots.plot_cross_attention(str(tmp_path / "x.png"), w, list("abcde"),
                                        ["Ein", "Hund", "läuft", ".", "</s>", "pad"], "s"))
  _check_png(plots.plot_bias_per_head(str(tmp_path / "b.png"), rng.normal(size=(8, 16, 16)),
                                      "ALiBi"))
  _check_png(plots.plot_sinusoid_table(str(tmp_path / "s.png"), rng.normal(size=(50, 32))))


def test_bad_shapes_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="layers, heads, target, source"):
    plots.plot_cross_attention(str(tmp_path / "x.png"), np.zeros((3, 4)), ["a"], ["b"], "t")
  with pytest.raises(ValueError, match="non-empty"):
    plots.plot_heatmaps(str(tmp_path / "x.png"), np.zeros((0, 2, 2)), [], suptitle="",
                        xlabel="", ylabel="", colorbar_label="")
  (tmp_path / "n.png").write_text("not a png")
  with pytest.raises(ValueError, match="not a PNG"):
    plots.read_png_size(str(tmp_path / "n.png"))

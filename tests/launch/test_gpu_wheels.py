"""launch.gpu_wheels: what the GPU image lacks is fetched, and nothing it needs is forgotten."""

import importlib.metadata

import pytest
from packaging.requirements import Requirement

from launch import gpu_wheels

ENV = {'python_version': '3.12', 'sys_platform': 'linux', 'platform_system': 'Linux'}


def _needs(name: str, extras: frozenset, base=True) -> set[tuple[str, frozenset]]:
  """(name, extras) of each requirement of the installed `name` that applies on the image: its
  own (`base`) and those of the `extras` asked for."""
  out = set()
  for line in importlib.metadata.requires(name) or []:
    req = Requirement(line)
    marker_ok = lambda extra: req.marker is None or req.marker.evaluate({**ENV, 'extra': extra})
    if (base and marker_ok('')) or (not marker_ok('') and any(marker_ok(e) for e in extras)):
      out.add((gpu_wheels.canonical(req.name), frozenset(req.extras)))
  return out


def test_every_package_the_missing_ones_need_is_on_the_image_or_fetched():
  pinned = gpu_wheels.pinned_dependencies()
  fetched = {n for n, _ in gpu_wheels.wanted()}
  todo = [(n, frozenset()) for n in pinned if n not in gpu_wheels.IMAGE_HAS]
  seen, forgotten = set(), set()
  while todo:
    item = todo.pop()
    if item in seen:
      continue
    seen.add(item)
    name, extras = item
    if name not in fetched and name not in gpu_wheels.IMAGE_HAS:
      forgotten.add(name)
    if name in fetched:  # the image's own packages bring their own requirements
      todo.extend(_needs(name, extras))
    elif extras:  # an extra of an image package (etils[epath]) may need more
      todo.extend(_needs(name, extras, base=False))
  assert not forgotten, (
    f'needed on the GPU image but neither there (launch.gpu_wheels.IMAGE_HAS, from '
    f'/work/.library/device/KINDS.md) nor fetched (IMAGE_LACKS): {sorted(forgotten)}'
  )


def test_direct_dependencies_keep_their_pins_and_the_rest_the_installed_versions():
  pinned = gpu_wheels.pinned_dependencies()
  got = dict(gpu_wheels.wanted())
  assert len(got) == len(gpu_wheels.wanted())  # each package once
  for name, version in got.items():
    if name in pinned:
      assert version == pinned[name] and name not in gpu_wheels.IMAGE_HAS
    else:
      assert name in gpu_wheels.IMAGE_LACKS
      assert version == importlib.metadata.version(name)
  assert {'ml-collections', 'tensorflow-datasets', 'grain'} <= set(got)
  assert not {'jax', 'flax', 'optax'} & set(got)  # the image's own, with CUDA


def test_an_unpinned_dependency_is_refused_by_name(tmp_path):
  p = tmp_path / 'pyproject.toml'
  p.write_text('[project]\ndependencies = ["jax==0.10.2", "grain>=0.2"]\n')
  with pytest.raises(ValueError, match="'grain>=0.2' is not pinned"):
    gpu_wheels.pinned_dependencies(str(p))
  p.write_text('[project]\ndependencies = ["jax[cuda12]==0.10.2", "Tensorboard_X==1.0"]\n')
  assert gpu_wheels.pinned_dependencies(str(p)) == {'jax': '0.10.2', 'tensorboard-x': '1.0'}

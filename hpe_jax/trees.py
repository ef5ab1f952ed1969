"""Nested dicts as flat {'a/b/c': leaf} maps: the keys checkpoints and weight imports are checked
and matched by, and config fields are compared by ('train.lr')."""

from __future__ import annotations

import ml_collections

_NESTED = (dict, ml_collections.ConfigDict)


def flatten(tree, separator: str = '/') -> dict[str, object]:
  """Nested dicts or ConfigDicts (e.g. nnx.to_pure_dict of a model) -> {'a/b/c': leaf}, in the
  dicts' order; keys are joined as strings, empty dicts vanish."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, _NESTED):
      flat.update(
        {f'{key}{separator}{sub}': leaf for sub, leaf in flatten(value, separator).items()}
      )
    else:
      flat[str(key)] = value
  return flat


def unflatten(like, flat: dict[str, object], separator: str = '/') -> dict:
  """The inverse of `flatten`: plain nested dicts shaped like `like` (which flattens to flat's
  keys), holding flat's leaves."""

  def build(node, prefix: str) -> dict:
    return {
      key: build(value, f'{prefix}{key}{separator}')
      if isinstance(value, _NESTED)
      else flat[f'{prefix}{key}']
      for key, value in node.items()
    }

  return build(like, '')

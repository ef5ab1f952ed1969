"""Nested parameter dicts as flat {'a/b/c': leaf} maps: the keys checkpoints and weight imports
are checked and matched by."""

from __future__ import annotations

import jax


def flatten(tree) -> dict[str, object]:
  """A nested dict (e.g. nnx.to_pure_dict of a model) -> {'a/b/c': leaf}."""
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(like, flat: dict[str, object]):
  """The inverse of `flatten`, shaped like the nested dict `like` (which flattens to flat's keys)."""
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
                                      [flat[k] for k in flatten(like)])

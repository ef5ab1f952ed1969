"""The flags of the tools that time train steps (tools/benchmark.py, tools/compare_peer.py)."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags


def define() -> tuple[flags.FlagHolder, flags.FlagHolder, flags.FlagHolder]:
  """Defines --config, --steps and --repeats; returns their holders in that order."""
  return (
    config_flags.DEFINE_config_file('config', None, 'Config file (path[:arg]).'),
    flags.DEFINE_integer('steps', 20, 'Timed steps per repeat.', lower_bound=1),
    flags.DEFINE_integer('repeats', 3, 'Timed repeats; the median is reported.', lower_bound=1),
  )

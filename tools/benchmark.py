"""Train-step throughput of a config on the devices present: compile time and images/s.

  python tools/benchmark.py --config=configs/pretrain.py
  python tools/benchmark.py --config=configs/pretrain.py:paper --config.model.dtype=bfloat16

The batch is random and already in device memory, so this measures the step alone
(tools/benchmark_pipeline.py measures the input pipeline). Prints one JSON line; timings are
medians over repeats, each synchronised.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from hpe_jax import cli

# `python tools/X.py` puts tools/ on the path, not the repository root that holds tools.lib.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from tools.lib import timing_flags  # noqa: E402  (after the path)

_CONFIG, _STEPS, _REPEATS = timing_flags.define()
flags.adopt_module_key_flags(timing_flags)  # --help lists them


def main(args: list[str]) -> None:
  del args
  from tools.lib import benchmark  # pylint: disable=g-import-not-at-top  (--help stays fast)

  print(json.dumps(benchmark.benchmark(_CONFIG.value, steps=_STEPS.value, repeats=_REPEATS.value)))


def run() -> None:
  cli.run(main, required=('config',))


if __name__ == '__main__':
  run()

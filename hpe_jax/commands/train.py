r"""Trains a model: the command line entry point.

  hpe-train --config=configs/pretrain.py [--workdir=runs/pretrain] \
      [--config.train.num_steps=2000 ...]

(`python -m hpe_jax.main` and `python -m hpe_jax.commands.train` are the same.) The workdir
defaults to runs/<config name>[_<config arg>]; re-running the same command resumes. Exit codes:
0 done, 2 a config, data, workdir or checkpoint problem (one line on stderr says which and what to
do), 3 training diverged, 130 stopped by Ctrl-C / SIGTERM (a checkpoint was saved).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from hpe_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file, e.g. configs/pretrain.py (optionally path:arg).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default runs/<config name>).')


def main(args: list[str]) -> None:
  del args
  # The library is imported here, not at the top, so that --help and flag errors stay fast.
  from hpe_jax import default_config  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  default_config.validate(config)  # before jax's devices, data or the workdir are touched
  if config.distributed:  # before anything touches the devices
    import jax  # pylint: disable=g-import-not-at-top

    jax.distributed.initialize()
  from hpe_jax.training import train  # pylint: disable=g-import-not-at-top

  workdir = _WORKDIR.value or default_config.default_workdir(
    flags.FLAGS['config'].serialize().partition('=')[2]
  )
  train.train_and_evaluate(config, workdir)


def run() -> None:
  cli.run(main, required=('config',))


if __name__ == '__main__':
  run()

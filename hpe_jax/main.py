"""Command line entry point.

  python -m hpe_jax.main --config=configs/pretrain.py [--workdir=runs/pretrain] \
      [--config.train.num_steps=2000 ...]

The workdir defaults to runs/<config name>[_<config arg>]; re-running the same command resumes.
Exit codes: 0 done, 2 a config, data, workdir or checkpoint problem (one line on stderr says which
and what to do), 3 training diverged, 130 stopped by Ctrl-C / SIGTERM (a checkpoint was saved).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hpe_jax import default_config

DIVERGED_EXIT_CODE = 3  # usage and environment errors exit with 2

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/pretrain.py'
                                          ' (optionally path:arg).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default runs/<config name>).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    default_config.validate(config)  # before jax, data or the workdir are touched
  except default_config.ConfigError as e:
    default_config.exit_with_error(str(e))
  logging.set_verbosity(logging.ERROR)  # Orbax and TFDS log every save and read (INFO, WARNING)
  if config.distributed:  # before anything touches the devices
    import jax
    jax.distributed.initialize()
  # Imported here so that --help and flag errors stay fast.
  from hpe_jax.data import datasets
  from hpe_jax.training import checkpoint
  from hpe_jax.training import train
  from hpe_jax.training import workdir as workdir_lib
  workdir = _WORKDIR.value or default_config.default_workdir(
      flags.FLAGS['config'].serialize().partition('=')[2])
  try:
    train.train_and_evaluate(config, workdir)
  except checkpoint.CheckpointIOError as e:
    # Orbax's failed writer threads report again as the interpreter shuts down: skip that, so
    # that this line stays the last.
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)
  except (default_config.ConfigError, datasets.DatasetError, checkpoint.CheckpointError,
          workdir_lib.WorkdirError) as e:
    default_config.exit_with_error(str(e))
  except train.TrainingDiverged as e:
    default_config.exit_with_error(str(e), code=DIVERGED_EXIT_CODE)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=default_config.parse_flags)

"""Runs a study of 2D pre-training vs 3D-only training, then writes its report.

  hpe-study --study=configs/study_small.py                    # runs/study_small/report/
  hpe-study --study=configs/study_small.py --print_commands   # the commands, for a cluster
  hpe-study --study=configs/study_small.py --report_only
  hpe-study --study=configs/study_small.py --data_dir=/data/tfds

(`python tools/study.py` and `python -m hpe_jax.tools.run_study` are the same.) Re-running
resumes: finished runs and evaluations are skipped, interrupted ones resume from their latest
checkpoint. --print_commands builds no dataset and writes nothing. See hpe_jax/study/spec.py for
the study config's fields. Exit codes: 0 done, 2 a problem with the study (one line on stderr says
which and what to do), 130 interrupted (run the same command to resume).
"""

from __future__ import annotations

import sys

from absl import flags

from hpe_jax import cli

_STUDY = flags.DEFINE_string(
  'study', None, 'Study config file, e.g. configs/study_small.py (optionally path:arg).'
)
_STUDY_DIR = flags.DEFINE_string(
  'study_dir', None, 'Where the runs and the report go (default runs/<study config name>).'
)
_DATA_DIR = flags.DEFINE_string(
  'data_dir',
  '',
  'Where the datasets are built, for every run and '
  "evaluation of the study (default: the study's overrides' "
  'data.data_dir, else $HPE_DATA_DIR or ~/tensorflow_datasets).',
)
_PRINT_COMMANDS = flags.DEFINE_bool(
  'print_commands',
  False,
  'Print the shell commands of every pending step in dependency order instead of running them.',
)
_REPORT_ONLY = flags.DEFINE_bool(
  'report_only', False, 'Only rebuild the report from what is finished.'
)
_QUIET = flags.DEFINE_bool(
  'quiet', False, "Hide the runs' own output (it is always appended to <run workdir>/study.log)."
)


def main(args: list[str]) -> None:
  del args
  from hpe_jax import study  # pylint: disable=g-import-not-at-top  (--help stays fast)

  try:
    study.run(
      _STUDY.value,
      _STUDY_DIR.value,
      data_dir=_DATA_DIR.value,
      print_commands=_PRINT_COMMANDS.value,
      report_only=_REPORT_ONLY.value,
      echo=not _QUIET.value,
      log=lambda line: print(line, flush=True),
    )
  except KeyboardInterrupt:  # the run in progress saved a checkpoint (it got the Ctrl-C too)
    print('Interrupted; run the same command to resume.', file=sys.stderr)
    sys.exit(130)


def run() -> None:
  cli.run(main, required=('study',))


if __name__ == '__main__':
  run()

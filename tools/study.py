"""Runs a study of 2D pre-training vs 3D-only training, then writes its report.

  python tools/study.py --study=configs/study_small.py            # runs/study_small/report/
  python tools/study.py --study=configs/study_small.py --print_commands   # for a cluster
  python tools/study.py --study=configs/study_small.py --report_only

Re-running resumes: finished runs and evaluations are skipped, interrupted ones resume from their
latest checkpoint. See hpe_jax/study.py for the study config's fields.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

_STUDY = flags.DEFINE_string('study', None, 'Study config file, e.g. configs/study_small.py '
                             '(optionally path:arg).')
_STUDY_DIR = flags.DEFINE_string('study_dir', None, 'Where the runs and the report go (default '
                                 'runs/<study config name>).')
_PRINT_COMMANDS = flags.DEFINE_bool('print_commands', False, 'Print the shell commands of every '
                                    'pending step in dependency order instead of running them.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only rebuild the report from what is '
                                 'finished.')
_QUIET = flags.DEFINE_bool('quiet', False, 'Hide the runs\' own output (it is always appended to '
                           '<run workdir>/study.log).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset read at INFO
  from hpe_jax import study  # imported here so that --help and flag errors stay fast
  try:
    study.run(_STUDY.value, _STUDY_DIR.value, print_commands=_PRINT_COMMANDS.value,
              report_only=_REPORT_ONLY.value, echo=not _QUIET.value,
              log=lambda line: print(line, flush=True))
  except study.StudyError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:  # the run in progress saved a checkpoint (it got the Ctrl-C too)
    print('Interrupted; run the same command to resume.', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  flags.mark_flag_as_required('study')
  app.run(main)

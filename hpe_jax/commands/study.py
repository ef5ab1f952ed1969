"""Runs a study of 2D pre-training vs 3D-only training, then writes its report.

  hpe-study --study=configs/study_small.py                    # runs/study_small/report/
  hpe-study --study=configs/study_small.py --print_commands   # the commands and their cost
  hpe-study --study=configs/study_paper.py --print_commands --images_per_s=1200
  hpe-study --study=configs/study_small.py --report_only
  hpe-study --study=configs/study_small.py --data_dir=/data/tfds
  hpe-study --study=configs/study_small.py --launcher=slurm   # Slurm jobs (submitit), e.g.
      with --slurm_partition=gpu --slurm_time=120 --slurm_extra=account=abc

(`python -m hpe_jax.commands.study` is the same.) Re-running resumes: finished runs and evaluations
are skipped, interrupted ones resume from their latest checkpoint. --print_commands builds no
dataset and writes nothing. See hpe_jax/study/spec.py for the study config's fields.

--launcher=slurm submits every pending process as a Slurm job instead, each started after the
one it needs (a fine-tune after its pre-training, an evaluation after its training), and returns;
running the same command again skips what finished, leaves queued jobs alone and resubmits the
failed ones, saying why each failed and where its log is; --report_only writes the report of
what has finished (hpe_jax/study/slurm.py, docs/studies.md).

A damaged record (a half-written evaluation, a time record that is not JSON) is set aside as
<name>.damaged, said in one line, and what made it is redone.

Exit codes: 0 done, 2 a problem with the study (one line on stderr says which and what to do),
3 (--launcher=slurm) a job failed, was held back after failing the same way twice
(--retry_failed resubmits it) or will never start as asked (the lines above say why and which
flag to change), 130 interrupted (run the same command to resume).
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
_IMAGES_PER_S = flags.DEFINE_float(
  'images_per_s',
  None,
  "--print_commands' plan table: training images/s of ResNet-50 at 256 px on one GPU, for its "
  "GPU-hours (default: hpe_jax/study/cost.py's assumed rate, until BENCHMARKS.md has a "
  'measured one).',
  lower_bound=0.001,
)
_REPORT_ONLY = flags.DEFINE_bool(
  'report_only', False, 'Only rebuild the report from what is finished.'
)
_QUIET = flags.DEFINE_bool(
  'quiet', False, "Hide the runs' own output (it is always appended to <run workdir>/study.log)."
)
_LAUNCHER = flags.DEFINE_enum(
  'launcher',
  'local',
  ['local', 'slurm'],
  'local: run the pending processes here, one after the other; slurm: submit each as a Slurm '
  'job (submitit), dependent ones after the job they need.',
)
_SLURM_PARTITION = flags.DEFINE_string(
  'slurm_partition', None, "Slurm partition of the jobs (default: the cluster's)."
)
_SLURM_GPUS_PER_NODE = flags.DEFINE_integer(
  'slurm_gpus_per_node', 1, 'GPUs of each job (0: none).', lower_bound=0
)
_SLURM_CPUS_PER_TASK = flags.DEFINE_integer(
  'slurm_cpus_per_task', None, "CPUs of each job (default: the cluster's).", lower_bound=1
)
_SLURM_TIME = flags.DEFINE_integer(
  'slurm_time',
  1440,
  "Time limit of each job in minutes (at most the partition's; a training cut short resumes "
  'from its latest checkpoint when the command is run again).',
  lower_bound=1,
)
_SLURM_MEM_GB = flags.DEFINE_float(
  'slurm_mem_gb', None, "Memory of each job in GB (default: the cluster's)."
)
_SLURM_EXTRA = flags.DEFINE_multi_string(
  'slurm_extra',
  [],
  'More sbatch options as key=value (or key alone), repeatable: --slurm_extra=account=abc '
  '--slurm_extra=qos=high.',
)
_SLURM_LOGS = flags.DEFINE_string(
  'slurm_logs', None, "Where the jobs' scripts and logs go (default <study_dir>/slurm/)."
)
_RETRY_FAILED = flags.DEFINE_bool(
  'retry_failed',
  False,
  '--launcher=slurm: resubmit also the processes whose last two jobs failed the same way (a '
  're-run holds them back otherwise, and exits 3).',
)
SLURM_FLAGS = (
  _SLURM_PARTITION,
  _SLURM_GPUS_PER_NODE,
  _SLURM_CPUS_PER_TASK,
  _SLURM_TIME,
  _SLURM_MEM_GB,
  _SLURM_EXTRA,
  _SLURM_LOGS,
  _RETRY_FAILED,
)


def _launcher():
  """The slurm.Launcher of the --slurm_* flags (None for --launcher=local); raises SlurmError
  naming a bad flag."""
  from hpe_jax.study import slurm_options  # pylint: disable=g-import-not-at-top

  if _LAUNCHER.value == 'local':
    given = [f'--{holder.name}' for holder in SLURM_FLAGS if flags.FLAGS[holder.name].present]
    if given:
      raise slurm_options.SlurmError(
        f'{", ".join(given)} apply to --launcher=slurm only: add --launcher=slurm, or drop them'
      )
    return None
  options = slurm_options.Options(
    partition=_SLURM_PARTITION.value,
    gpus_per_node=_SLURM_GPUS_PER_NODE.value,
    cpus_per_task=_SLURM_CPUS_PER_TASK.value,
    time_min=_SLURM_TIME.value,
    mem_gb=_SLURM_MEM_GB.value,
    extra=tuple(_SLURM_EXTRA.value),
    logs=_SLURM_LOGS.value,
  )
  options.check()
  from hpe_jax.study import slurm  # pylint: disable=g-import-not-at-top

  return slurm.Launcher(options, retry_failed=_RETRY_FAILED.value)


def _set_aside_damaged(log) -> None:
  """Sets aside the study's damaged records (a half-written evaluation, a time record that is
  not JSON), one line each, so that the run redoes them; with --print_commands (which writes
  nothing) raises StudyError naming the first instead."""
  from hpe_jax.study import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from hpe_jax.study import results  # pylint: disable=g-import-not-at-top
  from hpe_jax.study import spec  # pylint: disable=g-import-not-at-top

  plan = plan_lib.plan_study(
    _STUDY.value, _STUDY_DIR.value, data_dir=_DATA_DIR.value, plan_only=True
  )
  damaged = results.damaged_files(plan)
  if damaged and _PRINT_COMMANDS.value:
    path, damage, meaning = damaged[0]
    raise spec.StudyError(
      f'{path} is damaged ({damage}): run the study without --print_commands, which sets it '
      f'aside ({meaning}), or delete it'
    )
  results.set_aside_damaged(plan, log)


def main(args: list[str]) -> None:
  del args
  launcher = _launcher()  # a bad --slurm_* flag is reported before the study's modules load
  from hpe_jax import study  # pylint: disable=g-import-not-at-top  (--help stays fast)

  log = lambda line: print(line, flush=True)
  try:
    _set_aside_damaged(log)
    study.run(
      _STUDY.value,
      _STUDY_DIR.value,
      data_dir=_DATA_DIR.value,
      print_commands=_PRINT_COMMANDS.value,
      report_only=_REPORT_ONLY.value,
      echo=not _QUIET.value,
      log=log,
      launcher=launcher,
      images_per_s=_IMAGES_PER_S.value,
    )
  except KeyboardInterrupt:  # the run in progress saved a checkpoint (it got the Ctrl-C too)
    print('Interrupted; run the same command to resume.', file=sys.stderr)
    sys.exit(130)


def run() -> None:
  cli.run(main, required=('study',))


if __name__ == '__main__':
  run()

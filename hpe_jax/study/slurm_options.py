"""What the Slurm jobs of a study ask for (the --slurm_* flags of hpe-study), checked, and
submitit's Slurm executor that asks for it. No JAX here: a bad flag is reported at once.
"""

from __future__ import annotations

import dataclasses
import re

import submitit

from hpe_jax import errors

# sbatch options the launcher or a --slurm_* flag sets: --slurm_extra may not.
OWN_OPTIONS = {
  'dependency': 'the launcher sets it from the plan',
  'kill-on-invalid-dep': 'the launcher sets it',
  'job-name': 'the launcher names each job',
  'output': 'use --slurm_logs',
  'error': 'use --slurm_logs',
  'partition': 'use --slurm_partition',
  'time': 'use --slurm_time',
  'gpus-per-node': 'use --slurm_gpus_per_node',
  'cpus-per-task': 'use --slurm_cpus_per_task',
  'mem': 'use --slurm_mem_gb',
  'nodes': 'each job runs one process on one node',
  'ntasks': 'each job runs one process on one node',
  'ntasks-per-node': 'each job runs one process on one node',
  'array': 'each job runs one process',
  'signal': 'submitit sets it (for time limits)',
  'open-mode': 'submitit sets it',
}
EXTRA_KEY = re.compile(r'[A-Za-z][A-Za-z0-9_-]*')
EXTRA_EXAMPLE = '--slurm_extra=account=abc --slurm_extra=qos=high'


class SlurmError(errors.HpeError):
  """Slurm cannot take the study as asked; the message names the flag or command, and the fix."""


def parse_extra(values) -> dict[str, str | bool]:
  """--slurm_extra values ('key=value', or 'key' for an option without value) -> {sbatch option
  (dashes): value (True: none)}. Raises SlurmError naming the bad value."""
  extra = {}
  for value in values:
    key, equals, text = value.partition('=')
    option = key.replace('_', '-')
    if not EXTRA_KEY.fullmatch(key) or (equals and not text):
      raise SlurmError(
        f'--slurm_extra={value!r} is not key=value with an sbatch option as key; e.g. '
        f'{EXTRA_EXAMPLE}'
      )
    if option in OWN_OPTIONS:
      raise SlurmError(f'--slurm_extra={value!r} sets --{option}: {OWN_OPTIONS[option]}')
    if option in extra:
      raise SlurmError(f'--slurm_extra sets --{option} twice; give each option once')
    extra[option] = text if equals else True
  return extra


@dataclasses.dataclass(frozen=True)
class Options:
  """The --slurm_* flags: what every job of a study asks Slurm for (None: Slurm's default)."""

  partition: str | None = None
  gpus_per_node: int = 1  # 0: ask for none
  cpus_per_task: int | None = None
  time_min: int = 1440  # each job's time limit, minutes
  mem_gb: float | None = None
  extra: tuple[str, ...] = ()  # --slurm_extra values, 'key=value'
  logs: str | None = None  # submitit's folder (job scripts, logs); None: <study_dir>/slurm

  def check(self) -> dict[str, str | bool]:
    """Raises SlurmError naming a bad option -> the extra sbatch options (parse_extra)."""
    if self.mem_gb is not None and self.mem_gb <= 0:
      raise SlurmError(f'--slurm_mem_gb={self.mem_gb} must be positive (GB per node)')
    return parse_extra(self.extra)


def make_executor(folder: str, options: Options) -> submitit.SlurmExecutor:
  """submitit's Slurm executor with `options` (job logs and scripts in `folder`). Raises
  SlurmError if Slurm's commands are not on PATH or an option is bad."""
  extra = options.check()
  try:
    executor = submitit.SlurmExecutor(folder)
  except RuntimeError as e:  # submitit's "Could not detect srun"
    raise SlurmError(
      "--launcher=slurm needs Slurm's srun, sbatch and squeue on PATH: run the study on a "
      'Slurm login node, or use --launcher=local'
    ) from e
  parameters = {
    'partition': options.partition,
    'gpus_per_node': options.gpus_per_node or None,
    'cpus_per_task': options.cpus_per_task,
    'mem': None if options.mem_gb is None else f'{round(options.mem_gb * 1024)}M',
  }
  executor.update_parameters(
    time=options.time_min,
    additional_parameters=extra,
    **{key: value for key, value in parameters.items() if value is not None},
  )
  return executor

"""What of a study is finished: checkpoints and evaluations (the records themselves:
processes.py)."""

from __future__ import annotations

import os

from hpe_jax.evaluation import trained_run
from hpe_jax.study import plan as plan_lib
from hpe_jax.study import processes
from hpe_jax.study import spec


def is_trained(run: plan_lib.Run) -> bool:
  return processes.latest_step(run.workdir) >= run.num_steps


def result_files(cell: plan_lib.Cell, datasets) -> dict[str, str]:
  """{dataset: the file its evaluation writes} of a cell's evaluation datasets."""
  return {name: trained_run.result_path(cell.run.workdir, name) for name in datasets}


def missing_evals(cell: plan_lib.Cell) -> list[str]:
  return [name for name, path in result_files(cell, cell.evals).items() if not os.path.isfile(path)]


def check_identities(plan: plan_lib.Plan) -> None:
  """Raises StudyError if a run was made with other flags than the study now gives it (its
  results would not be what the study config says). A run without a checkpoint was not made:
  what a failed process recorded (as earlier versions did) does not hold its workdir."""
  for run in plan.runs:
    recorded = processes.read_time(run.workdir).get('identity')
    if recorded is None or not processes.latest_step(run.workdir):
      continue
    if plan_lib.comparable_identity(recorded) != run.identity():
      raise spec.StudyError(
        f'{run.workdir} was made by another config: {recorded}; the study now asks for '
        f'{run.identity()}. Restore the study config, or delete {run.workdir} to train it '
        'again.'
      )

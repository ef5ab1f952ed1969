"""What of a study is finished: checkpoints, evaluations, and the time records of its runs."""

from __future__ import annotations

import json
import os

from hpe_jax.evaluation import trained_run
from hpe_jax.study import plan as plan_lib
from hpe_jax.study import spec

TIME_FILE = 'study_time.json'  # in each run's workdir and in the study dir
LOG_FILE = 'study.log'  # each run's processes' output, appended


def latest_step(workdir: str) -> int:
  """The latest committed checkpoint step of a run (0: none).

  Orbax names a committed checkpoint by its step (an unfinished save carries a tmp suffix).
  Listing the directory rather than asking Orbax keeps this process off the accelerator: Orbax
  initialises JAX's backend, which on a GPU would take memory the runs need.
  """
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return 0
  return max((int(name) for name in os.listdir(directory) if name.isdigit()), default=0)


def is_trained(run: plan_lib.Run) -> bool:
  return latest_step(run.workdir) >= run.num_steps


def missing_evals(cell: plan_lib.Cell) -> list[str]:
  return [
    name
    for name in cell.evals
    if not os.path.isfile(trained_run.result_path(cell.run.workdir, name))
  ]


def read_time(directory: str) -> dict:
  """The time record of a run's workdir or of a study dir ({} if none)."""
  path = os.path.join(directory, TIME_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_json(path: str, record: dict) -> None:
  """Writes through a temporary file, so that an interruption never leaves half a record."""
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=2)
  os.replace(path + '.tmp', path)


def check_identities(plan: plan_lib.Plan) -> None:
  """Raises StudyError if a run was made with other flags than the study now gives it (its
  results would not be what the study config says)."""
  for run in (*plan.pretrains, *(cell.run for cell in plan.cells)):
    recorded = read_time(run.workdir).get('identity')
    if recorded is not None and plan_lib.comparable_identity(recorded) != run.identity():
      raise spec.StudyError(
        f'{run.workdir} was made by another config: {recorded}; the study now asks for '
        f'{run.identity()}. Restore the study config, or delete {run.workdir} to train it '
        'again.'
      )

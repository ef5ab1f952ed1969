"""Studies: 2D pre-training vs 3D-only training across backbones, datasets, seeds and budgets.

  python tools/study.py --study=configs/study_small.py [--study_dir=runs/study_small] \
      [--data_dir=DIR] [--print_commands] [--report_only] [--quiet]

A study config's `get_config(arg)` lists the axes (spec.FIELDS). Every combination of them is a
cell (plan.py): a fine-tuning run started from a shared pre-training run, or a 3D-only run, then
evaluated by hpe_jax.evaluate on its own 3D dataset and on every other dataset of the study.
Everything runs as the `python -m ...` commands that --print_commands shows (runner.py); a re-run
skips what is finished and resumes what was interrupted (status.py). The report (results table,
generalisation matrix, plots: results.py, plots.py) goes to <study_dir>/report/.
"""

from hpe_jax.study.plan import Cell
from hpe_jax.study.plan import Plan
from hpe_jax.study.plan import Run
from hpe_jax.study.plan import plan_study
from hpe_jax.study.results import METRICS
from hpe_jax.study.results import collect
from hpe_jax.study.results import csv_columns
from hpe_jax.study.results import write_report
from hpe_jax.study.runner import CACHE_ENV
from hpe_jax.study.runner import pending_commands
from hpe_jax.study.runner import run
from hpe_jax.study.spec import FIELDS
from hpe_jax.study.spec import Axes
from hpe_jax.study.spec import StudyError
from hpe_jax.study.spec import check_config
from hpe_jax.study.status import LOG_FILE
from hpe_jax.study.status import TIME_FILE
from hpe_jax.study.status import is_trained
from hpe_jax.study.status import missing_evals
from hpe_jax.study.status import read_time

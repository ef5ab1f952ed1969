"""What the study tests share: a tiny study's config file, and stand-ins for Slurm's commands."""

from __future__ import annotations

import os

from conftest import TINY_DATASET
import pytest

OTHER_EVAL = f'{TINY_DATASET}:train_2d'  # another split as a second evaluation dataset Y
STEPS = 2
BATCH_SIZE = 8


def study_source(
  data_dir: str | None, log_every: int = 1, eval_datasets: tuple[str, ...] = (OTHER_EVAL,)
) -> str:
  """A study config file: both pretraining modes, one backbone, `eval_datasets` as the X, one
  budget of 2 steps; its overrides set data.data_dir unless it is None."""
  data_dir_override = '' if data_dir is None else f', data_dir={data_dir!r}'
  return f"""import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.pretraining = ('2d', 'none')
  c.backbones = ('resnet18',)
  c.datasets_2d = ({TINY_DATASET!r},)
  c.datasets_3d = ({TINY_DATASET!r},)
  c.eval_datasets = {tuple(eval_datasets)!r}
  c.seeds = (0,)
  c.steps_3d = ({STEPS},)
  c.pretrain_steps = {STEPS}
  c.overrides = dict(
      model=dict(width=8, head_channels=16),
      data=dict(image_size=64, threads=1{data_dir_override}),
      train=dict(batch_size={BATCH_SIZE}, log_every={log_every}, checkpoint_every=100))
  return c
"""


FAKE_SBATCH = """#!/bin/sh
# sbatch: keeps the job script and answers with the next job id (or refuses, as told)
if [ -f "$FAKE_SLURM/refuse" ]; then cat "$FAKE_SLURM/refuse" >&2; exit 1; fi
id=$(( $(cat "$FAKE_SLURM/last_id" 2>/dev/null || echo 100) + 1 ))
echo $id > "$FAKE_SLURM/last_id"
cp "$1" "$FAKE_SLURM/job_$id.sh"
echo "Submitted batch job $id"
"""
FAKE_SQUEUE = """#!/bin/sh
if [ -f "$FAKE_SLURM/squeue_fails" ]; then echo 'slurm_load_jobs error: timeout' >&2; exit 1; fi
cat "$FAKE_SLURM/queue" 2>/dev/null; exit 0
"""
FAKE_SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/cancelled"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
  """sbatch, squeue, scancel and srun stand-ins on PATH -> their state dir: job_<id>.sh (the
  scripts sbatch got), queue (what squeue lists: 'id|STATE|reason' lines), cancelled."""
  bin_dir, state = tmp_path / 'bin', tmp_path / 'fake_slurm'
  bin_dir.mkdir()
  state.mkdir()
  scripts = {'sbatch': FAKE_SBATCH, 'squeue': FAKE_SQUEUE, 'scancel': FAKE_SCANCEL}
  for name, text in {**scripts, 'srun': '#!/bin/sh\n'}.items():
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_SLURM', str(state))
  return state


def sbatch_options(state, job_id: int) -> dict[str, str]:
  """The #SBATCH options of the script of job `job_id` ({'partition': 'gpu', ...})."""
  options = {}
  for line in (state / f'job_{job_id}.sh').read_text().splitlines():
    if line.startswith('#SBATCH --'):
      key, _, value = line[len('#SBATCH --') :].partition('=')
      options[key] = value
  return options

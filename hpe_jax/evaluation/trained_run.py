"""Evaluating a trained run on built datasets (what `hpe-evaluate` does): the
results of each dataset go to <workdir>/eval/<dataset>.json and .md (a Markdown table, per action
where the split names actions)."""

from __future__ import annotations

import json
import os
import re
from typing import Callable
from typing import Sequence

from hpe_jax import default_config
from hpe_jax import errors
from hpe_jax import files
from hpe_jax import inference
from hpe_jax.data import datasets
from hpe_jax.evaluation import report
from hpe_jax.evaluation import scoring
from hpe_jax.storage import checkpoint
from hpe_jax.storage import workdir as workdir_lib

# name -> (flip_test, subpixel) of the readout ablation
READOUTS = {
  'argmax': (False, False),
  'subpixel': (False, True),
  'flip': (True, False),
  'flip+subpixel': (True, True),
}


def result_path(workdir: str, dataset: str, suffix: str = '.json') -> str:
  """Where the results of `workdir` on a resolved dataset 'name:split' are saved."""
  return os.path.join(workdir, 'eval', re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset) + suffix)


def evaluate_run(
  workdir: str,
  dataset_names: Sequence[str] = (),
  *,
  step: int | str | None = None,
  flip_test: bool | None = None,
  subpixel: bool | None = None,
  readout_ablation: bool = False,
  limit: int = 0,
  batch_size: int | None = None,
  data_dir: str | None = None,
  log: Callable[[str], None] = print,
) -> dict[str, dict]:
  """Evaluates a run on each dataset and writes <workdir>/eval/<dataset>.{json,md}.

  Args:
    workdir: the trained run.
    dataset_names: NAME[/config][:split] of built datasets; empty: the run's data.eval.
    step: a saved step; None: the latest; 'best': the best by the run's train.keep_best.
    flip_test, subpixel: override the run's config.eval readout.
    readout_ablation: also evaluate every readout of READOUTS.
    limit: evaluate the first `limit` examples only; 0: all.
    batch_size: images per step; None: the run's train.batch_size.
    data_dir: where the datasets are built; None: the run's data.data_dir.
    log: gets progress lines and the tables.
  Returns:
    {dataset: results (scoring.evaluate's keys, plus 'readout' {name: results} with
    readout_ablation)}.
  Raises:
    ConfigError: a bad limit or batch size.
    DatasetError: a dataset is not built, or the run names no eval split and none is given.
    CheckpointError: `workdir` holds no usable run.
  """
  if limit < 0:
    raise errors.ConfigError(f'--limit={limit}: give a number of examples, or 0 for all')
  if batch_size is not None and batch_size <= 0:
    raise errors.ConfigError(
      f'--batch_size={batch_size}: give a positive number of images per '
      "step, or leave it out for the run's own"
    )
  run_config = inference.load_run_config(workdir)
  data_dir = run_config.data.data_dir if data_dir is None else data_dir
  names = list(dataset_names) or [run_config.data.eval]
  if not any(names):
    raise datasets.DatasetError(f'{workdir} has no data.eval split: name one with --dataset')
  # Datasets first: a missing one should fail before the model is built and compiled.
  refs = [datasets.resolve(name, 'eval', data_dir) for name in names]
  # The checkpoint is held while it is read: a run still training may delete it meanwhile.
  loaded = checkpoint.read_held(
    lambda: inference.load(
      workdir, step=step, flip_test=flip_test, subpixel=subpixel, batch_size=batch_size
    ),
    step,
    warn=log,
  )
  # Also the reference's readout, for mpjpe_legacy (the ablation's rows keep their own).
  predictor = loaded.with_readout(
    flip_test=loaded.config.eval.flip_test,
    subpixel=loaded.config.eval.subpixel,
    reference_readout=True,
  )
  config = predictor.config
  config.data.eval_limit = limit
  config.data.data_dir = data_dir
  try:
    baseline = scoring.training_mean_pose(default_config.describe(config), log=log)
  except datasets.DatasetError as e:  # e.g. imported weights: their training data is not here
    baseline = None
    log(f'No mean-pose baseline (its training data is unavailable: {e}).')
  os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
  all_results = {}
  for ref in refs:
    log(
      f'Evaluating {workdir} (step {predictor.step}) on {ref}: flip test '
      f'{config.eval.flip_test}, sub-pixel {config.eval.subpixel}.'
    )
    results = scoring.evaluate(
      predictor.predict_fn,
      predictor.model_state,
      ref,
      config,
      predictor.sharding,
      baseline,
      batch_size=predictor.batch_size,
      log=log,
    )
    if readout_ablation:
      results['readout'] = {}
      for name, (flip, sub) in READOUTS.items():
        variant = predictor.with_readout(flip_test=flip, subpixel=sub)
        ablated = scoring.evaluate(
          variant.predict_fn,
          variant.model_state,
          ref,
          variant.config,
          variant.sharding,
          None,
          batch_size=variant.batch_size,
        )
        results['readout'][name] = {k: v for k, v in ablated.items() if k in report.READOUT_METRICS}
    record = {
      'workdir': workdir,
      'step': predictor.step,
      'dataset': str(ref),
      'flip_test': bool(config.eval.flip_test),
      'subpixel': bool(config.eval.subpixel),
      **results,
    }
    files.write_text(  # a study counts a result file as done
      result_path(workdir, str(ref)),
      json.dumps(workdir_lib.strict_json(record), indent=2, allow_nan=False),
    )
    readout = ' + '.join(
      name
      for name, on in (('flip test', config.eval.flip_test), ('sub-pixel', config.eval.subpixel))
      if on
    )
    table = report.markdown(
      f'{ref} ({workdir}, step {predictor.step}, readout: {readout or "argmax"})', results
    )
    with open(result_path(workdir, str(ref), '.md'), 'w') as f:
      f.write(table)
    log(table)
    log(f'Saved {result_path(workdir, str(ref))} and .md')
    all_results[str(ref)] = results
  return all_results

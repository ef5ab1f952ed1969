"""Evaluates a trained run on built datasets.

  python -m hpe_jax.evaluate --workdir=runs/finetune [--dataset=human36m:test ...] \
      [--noflip_test] [--nosubpixel] [--readout_ablation] [--limit=N] [--step=S]

Every dataset defaults to the run's own evaluation split (config.data.eval). For each one, the
results go to <workdir>/eval/<dataset>.json and .md (a Markdown table, per action where the split
names actions) and are printed. Predictions use the flip test and the sub-pixel readout unless
switched off; --readout_ablation also evaluates plain argmax, sub-pixel and flip test alone.
Evaluation is jit-compiled and batched over the local devices (one process).
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging

# name -> (flip_test, subpixel) of the readout ablation
READOUTS = {'argmax': (False, False), 'subpixel': (False, True), 'flip': (True, False),
            'flip+subpixel': (True, True)}


def result_path(workdir: str, dataset: str, suffix: str = '.json') -> str:
  """Where the results of `workdir` on a resolved dataset 'name:split' are saved."""
  return os.path.join(workdir, 'eval', re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset) + suffix)


def evaluate_run(workdir: str, dataset_names=(), *, step=None, flip_test=None, subpixel=None,
                 readout_ablation=False, limit=0, batch_size=None, data_dir=None,
                 log=print) -> dict[str, dict]:
  """Evaluates a run on each dataset (default: its own eval split); writes
  <workdir>/eval/<dataset>.{json,md}. -> {dataset: results (evaluation.evaluate's keys, plus
  'readout' {name: results} with readout_ablation)}."""
  from hpe_jax import default_config
  from hpe_jax import inference
  from hpe_jax.data import datasets
  from hpe_jax.evaluation import evaluate
  from hpe_jax.evaluation import report
  from hpe_jax.training import workdir as workdir_lib

  if limit < 0:
    raise default_config.ConfigError(f'--limit={limit}: give a number of examples, or 0 for all')
  if batch_size is not None and batch_size <= 0:
    raise default_config.ConfigError(f'--batch_size={batch_size}: give a positive number of '
                                     'images per step, or leave it out for the run\'s own')
  run_config = inference.load_run_config(workdir)
  data_dir = run_config.data.data_dir if data_dir is None else data_dir
  names = list(dataset_names) or [run_config.data.eval]
  if not any(names):
    raise datasets.DatasetError(f'{workdir} has no data.eval split: name one with --dataset')
  # Datasets first: a missing one should fail before the model is built and compiled.
  refs = [datasets.resolve(name, 'eval', data_dir) for name in names]
  predictor = inference.load(workdir, step=step, flip_test=flip_test, subpixel=subpixel,
                             batch_size=batch_size)
  config = predictor.config
  config.train.batch_size = predictor.batch_size  # what eval_batches reads
  config.data.eval_limit = limit
  config.data.data_dir = data_dir
  try:
    baseline = evaluate.training_mean_pose(config)
  except datasets.DatasetError as e:  # e.g. imported weights: their training data is not here
    baseline = None
    log(f'No mean-pose baseline (its training data is unavailable: {e}).')
  os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
  all_results = {}
  for ref in refs:
    log(f'Evaluating {workdir} (step {predictor.step}) on {ref}: flip test '
        f'{config.eval.flip_test}, sub-pixel {config.eval.subpixel}.')
    results = evaluate.evaluate(predictor.predict_fn, predictor.model_state, ref, config,
                                predictor.sharding, baseline, log=log)
    if readout_ablation:
      results['readout'] = {}
      for name, (flip, sub) in READOUTS.items():
        variant = predictor.with_readout(flip_test=flip, subpixel=sub)
        ablated = evaluate.evaluate(variant.predict_fn, variant.model_state, ref,
                                    variant.config, variant.sharding, None)
        results['readout'][name] = {k: v for k, v in ablated.items()
                                    if k in report.READOUT_METRICS}
    record = {'workdir': workdir, 'step': predictor.step, 'dataset': str(ref),
              'flip_test': bool(config.eval.flip_test), 'subpixel': bool(config.eval.subpixel),
              **results}
    with open(result_path(workdir, str(ref)), 'w') as f:
      json.dump(workdir_lib.strict_json(record), f, indent=2, allow_nan=False)
    readout = ' + '.join(name for name, on in (('flip test', config.eval.flip_test),
                                              ('sub-pixel', config.eval.subpixel)) if on)
    table = report.markdown(f'{ref} ({workdir}, step {predictor.step}, readout: '
                            f'{readout or "argmax"})', results)
    with open(result_path(workdir, str(ref), '.md'), 'w') as f:
      f.write(table)
    log(table)
    log(f'Saved {result_path(workdir, str(ref))} and .md')
    all_results[str(ref)] = results
  return all_results


def _define_flags() -> None:
  """The CLI's flags; defined only when run as a program, so that importing this module next to
  other CLIs (hpe_jax.predict) defines no flag twice."""
  flags.DEFINE_string('workdir', None, 'The trained run (holds config.json and checkpoints/).')
  flags.DEFINE_multi_string('dataset', [], 'NAME[/config][:split] of a built dataset; repeat for '
                            'several (default: the run\'s data.eval).')
  flags.DEFINE_integer('step', None, 'A saved training step (default: the latest).')
  flags.DEFINE_bool('flip_test', None, 'Average with the mirrored image\'s prediction (default: '
                    'the run\'s eval.flip_test, True).')
  flags.DEFINE_bool('subpixel', None, 'Quarter-pixel peak refinement (default: the run\'s '
                    'eval.subpixel, True).')
  flags.DEFINE_bool('readout_ablation', False, 'Also evaluate the other readouts (argmax, '
                    'sub-pixel, flip test, both): 4 passes over the data.')
  flags.DEFINE_integer('limit', 0, 'Evaluate the first N examples only (0: all).')
  flags.DEFINE_integer('batch_size', None, 'Images per step (default: the run\'s '
                       'train.batch_size).')
  flags.DEFINE_string('data_dir', None, 'Where the datasets are built (default: the run\'s '
                      'data.data_dir).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only checkpoint it opens
  from hpe_jax import default_config
  from hpe_jax.data import datasets
  from hpe_jax.training import checkpoint
  f = flags.FLAGS
  try:
    evaluate_run(f.workdir, f.dataset, step=f.step, flip_test=f.flip_test, subpixel=f.subpixel,
                 readout_ablation=f.readout_ablation, limit=f.limit, batch_size=f.batch_size,
                 data_dir=f.data_dir)
  except (default_config.ConfigError, datasets.DatasetError, checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  _define_flags()
  app.run(main)

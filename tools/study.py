"""Runs a study of 2D pre-training vs 3D-only training: hpe_jax/tools/run_study.py (`hpe-study`).

python tools/study.py --study=configs/study_small.py [--print_commands] [--report_only]
"""

if __name__ == '__main__':
  from hpe_jax.tools import run_study

  run_study.run()

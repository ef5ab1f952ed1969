"""`python -m hpe_jax.main` trains a model: the documented alias of `hpe-train`
(hpe_jax/commands/train.py says how)."""

from hpe_jax.commands.train import run

if __name__ == '__main__':
  run()

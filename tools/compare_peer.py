"""hpe_jax's train step against its PyTorch peer (tools/lib/torch_peer.py): same model, same
batch.

Times, in one run and on the same random batch: hpe_jax's jitted train step (tools/benchmark.py's),
the peer in eager float32 (as the reference trains) and the peer tuned (channels_last,
torch.compile, bfloat16 autocast for a bfloat16 config). Prints one JSON line per system, then one
with the ratios hpe_jax / peer of images/s; with --min_ratio_eager (or _tuned) it prints FAIL and
exits 1 when a ratio is below it. tools/lib/compare_peer.py says what each field measures. Needs
torch (pip install -e .[torch]).

The CPU target (ResNet-18, 128 px, batch 8; at least the eager peer's images/s):
  python tools/compare_peer.py --config=configs/finetune.py --config.model.width=64 \\
      --config.model.head_channels=256 --config.data.image_size=128 \\
      --config.train.batch_size=8 --steps=3 --repeats=5 --min_ratio_eager=1.0
The GPU figures (add --peak_tflops, e.g. 989 for an H100 SXM's dense bf16, 495 for tf32):
  python tools/compare_peer.py --config=configs/finetune.py:paper \\
      --config.train.batch_size=32 [--config.model.dtype=bfloat16]
  python tools/compare_peer.py --config=configs/finetune.py:paper \\
      --config.model.name=hourglass --config.train.batch_size=32 [--config.model.dtype=bfloat16]
"""

from __future__ import annotations

import os
import sys

from absl import flags

from hpe_jax import cli

# `python tools/X.py` puts tools/ on the path, not the repository root that holds tools.lib.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from tools.lib import timing_flags  # noqa: E402  (after the path)

_CONFIG, _STEPS, _REPEATS = timing_flags.define()
flags.adopt_module_key_flags(timing_flags)  # --help lists them
_PEERS = flags.DEFINE_list('peers', ['eager', 'tuned'], 'Peer modes to time: eager, tuned.')
_WARMUP = flags.DEFINE_integer(
  'warmup',
  3,
  'Untimed steps before timing (the first included): '
  'torch.compile may recompile on the second and third steps.',
  lower_bound=1,
)
_MIN_RATIO_EAGER = flags.DEFINE_float(
  'min_ratio_eager', 0.0, 'FAIL (exit 1) if hpe_jax / eager peer images/s is below this.'
)
_MIN_RATIO_TUNED = flags.DEFINE_float(
  'min_ratio_tuned', 0.0, 'FAIL (exit 1) if hpe_jax / tuned peer images/s is below this.'
)
_PARTS = flags.DEFINE_bool(
  'parts',
  False,
  'Also time the forward pass (with losses) and forward + backward alone, '
  'for hpe_jax and the eager peer: one more JSON line each (parts_ms; the update and the rest '
  'are the step minus forward + backward).',
)
_PEAK_TFLOPS = flags.DEFINE_float(
  'peak_tflops', 0.0, "The device's peak TFLOP/s in the config's dtype, for MFU (0: no MFU)."
)


def main(args: list[str]) -> None:
  del args
  # Before jax starts a GPU backend: leave GPU memory to the torch peer, in this process.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  from tools.lib import compare_peer  # pylint: disable=g-import-not-at-top  (--help stays fast)

  min_ratios = {'eager': _MIN_RATIO_EAGER.value, 'tuned': _MIN_RATIO_TUNED.value}
  failures = compare_peer.compare(
    _CONFIG.value,
    peers=_PEERS.value,
    parts=_PARTS.value,
    peak_tflops=_PEAK_TFLOPS.value,
    timing=compare_peer.Timing(steps=_STEPS.value, repeats=_REPEATS.value, warmup=_WARMUP.value),
    min_ratios=min_ratios,
    log=lambda line: print(line, flush=True),
  )
  if failures:
    print('FAIL: ' + '; '.join(failures), flush=True)
    sys.exit(1)
  if any(min_ratios.values()):
    print('PASS', flush=True)


def run() -> None:
  cli.run(main, required=('config',))


if __name__ == '__main__':
  run()

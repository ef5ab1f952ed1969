"""hpe_jax's train step against its PyTorch peer (tools/torch_peer.py): same model, same batch.

Times, in one run and on the same random batch (uint8 images, joints, masks, depth, has_3d; 2D and
3D samples as the config mixes them): hpe_jax's jitted train step (tools/benchmark.py's), the
peer in eager float32 (as the reference trains) and the peer tuned (channels_last,
torch.compile, bfloat16 autocast for a bfloat16 config). Prints one JSON line per system, then one
with the ratios hpe_jax / peer of images/s; with --min_ratio_eager (or _tuned) it prints FAIL and
exits 1 when a ratio is below it.

Flags: tools/benchmark.py's (--config and its overrides, --steps, --repeats), plus --peers,
--warmup, --min_ratio_eager, --min_ratio_tuned, --peak_tflops, --parts. The step time is the median
over --repeats of the mean of --steps steps, after --warmup steps; the first step's time (with
compilation for torch.compile, after `lower().compile()` for hpe_jax) is reported apart. Runs on a
GPU unchanged (torch.cuda when available, synchronised around the timing). Achieved TFLOP/s (and MFU
with --peak_tflops): `xla_*`, hpe_jax's step cost by XLA's cost analysis (it counts the sub-pixel
head's zero taps and elementwise work) over its step time; `model_*`, the model's matmul and
convolution FLOPs (torch's FlopCounterMode on the eager peer, forward and backward) over each
system's step time.

The CPU target (ResNet-18, 128 px, batch 8; at least the eager peer's images/s):
  python tools/compare_peer.py --config=configs/finetune.py --config.model.width=64 \\
      --config.model.head_channels=256 --config.data.image_size=128 \\
      --config.train.batch_size=8 --steps=3 --repeats=5 --min_ratio_eager=1.0
The GPU figures (add --peak_tflops, e.g. 989 for an H100 SXM's dense bf16, 495 for tf32):
  python tools/compare_peer.py --config=configs/finetune.py:paper \\
      --config.train.batch_size=32 [--config.model.dtype=bfloat16]
  python tools/compare_peer.py --config=configs/finetune.py:paper --config.model.name=hourglass \\
      --config.train.batch_size=32 [--config.model.dtype=bfloat16]
"""

from __future__ import annotations

import functools
import json
import os
import sys

# Before jax starts a GPU backend: leave GPU memory to the torch peer, which runs in this process.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from flax import nnx  # noqa: E402
import jax  # noqa: E402
import torch  # noqa: E402

import benchmark  # noqa: E402 (tools/, beside this script)
from hpe_jax.training import step as step_lib  # noqa: E402
import torch_peer  # noqa: E402

_PEERS = flags.DEFINE_list('peers', ['eager', 'tuned'], 'Peer modes to time: eager, tuned.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps before timing (the first included): '
                               'torch.compile may recompile on the second and third steps.')
_MIN_RATIO_EAGER = flags.DEFINE_float(
    'min_ratio_eager', 0.0, 'FAIL (exit 1) if hpe_jax / eager peer images/s is below this.')
_MIN_RATIO_TUNED = flags.DEFINE_float(
    'min_ratio_tuned', 0.0, 'FAIL (exit 1) if hpe_jax / tuned peer images/s is below this.')
_PARTS = flags.DEFINE_bool(
    'parts', False, 'Also time the forward pass (with losses) and forward + backward alone, '
    'for hpe_jax and the eager peer: one more JSON line each (parts_ms; the update and the rest '
    'are the step minus forward + backward).')
_PEAK_TFLOPS = flags.DEFINE_float(
    'peak_tflops', 0.0, "The device's peak TFLOP/s in the config's dtype, for MFU (0: no MFU).")


def _model_fields(config) -> dict:
  """The config's model, as every JSON line names it."""
  model = config.model
  fields = {'model': model.name}
  if model.name == 'hourglass':
    fields.update(num_stacks=model.num_stacks, features=model.hourglass_features)
  else:
    fields.update(width=model.width, head_channels=model.head_channels)
  fields.update(image_size=config.data.image_size, batch_size=config.train.batch_size,
                depth=model.depth)
  return fields


def _timing_fields(timing: dict, batch_size: int) -> dict:
  return {'first_step_s': round(timing['first_step_s'], 2),
          'step_ms': round(timing['step_s'] * 1e3, 2),
          'images_per_s': round(batch_size / timing['step_s'], 2),
          'load_1min': round(os.getloadavg()[0], 2)}


def _throughput_fields(prefix: str, flops: float | None, step_s: float) -> dict:
  """flops per step -> {prefix_flops_per_step, prefix_tflops_per_s[, prefix_mfu]}."""
  if not flops:
    return {}
  achieved = flops / step_s / 1e12
  fields = {f'{prefix}_flops_per_step': flops, f'{prefix}_tflops_per_s': round(achieved, 3)}
  if _PEAK_TFLOPS.value > 0:
    fields[f'{prefix}_mfu'] = round(achieved / _PEAK_TFLOPS.value, 4)
  return fields


def _torch_device(device: torch.device) -> str:
  if device.type == 'cuda':
    return torch.cuda.get_device_name(device)
  return f'cpu, {torch.get_num_threads()} threads'


def time_peer(config, batch, mode: str, model_flops: float | None) -> dict:
  """-> the peer's JSON line; eager mode counts the model FLOPs per step (`model_flops` is
  the count, if known, for the other modes)."""
  peer = torch_peer.PeerTrainStep(config, batch, step_lib.loss_config(config), mode=mode)
  timing = benchmark.time_steps(peer.step, peer.sync, steps=benchmark.STEPS.value,
                                repeats=benchmark.REPEATS.value, warmup=_WARMUP.value)
  if mode == 'eager':
    model_flops = peer.step_flops()  # on an untimed step, after the timing
  line = {'system': f'torch_{mode}', **_model_fields(config),
          'dtype': 'bfloat16 autocast' if peer.autocast_dtype else 'float32',
          'device': _torch_device(peer.device), 'torch': torch.__version__,
          'notes': ', '.join(peer.notes), **_timing_fields(timing, config.train.batch_size),
          **_throughput_fields('model', model_flops, timing['step_s'])}
  del peer
  if torch.cuda.is_available():  # hand the cached memory back before the next system
    torch.cuda.empty_cache()
  return line


def _parts_line(system: str, parts: dict, sync, step_ms: float) -> dict:
  """{'forward': fn, 'forward_backward': fn} -> a JSON line of their medians in ms."""
  parts_ms = {}
  for name, run in parts.items():
    timing = benchmark.time_steps(run, sync, steps=benchmark.STEPS.value,
                                  repeats=benchmark.REPEATS.value, warmup=_WARMUP.value)
    parts_ms[name] = round(timing['step_s'] * 1e3, 2)
  parts_ms['update_and_rest'] = round(step_ms - parts_ms['forward_backward'], 2)
  return {'system': system, 'parts_ms': parts_ms}


def hpe_jax_parts(config, batch) -> dict:
  """hpe_jax's forward + losses, and forward + losses + backward, jitted like the step."""
  defs, state = step_lib.init_state(config)
  mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  dtype = jax.numpy.dtype(config.model.dtype)
  loss_config = step_lib.loss_config(config)
  batch = jax.device_put(batch)

  def loss(model):
    images = step_lib.normalize_images(batch['image'], dtype)
    return step_lib.compute_losses(model(images), batch, loss_config)[0]

  def forward(model_state):
    return loss(nnx.merge(defs.model, model_state))

  def forward_backward(model_state):
    return nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(nnx.merge(defs.model, model_state))

  options = step_lib.compiler_options(mesh)
  return {name: functools.partial(jax.jit(fn, compiler_options=options), state['model'])
          for name, fn in (('forward', forward), ('forward_backward', forward_backward))}


def time_hpe_jax(config, batch, model_flops: float | None) -> dict:
  train_step = benchmark.JaxTrainStep(config, batch)
  timing = benchmark.time_steps(train_step.step, train_step.sync, steps=benchmark.STEPS.value,
                                repeats=benchmark.REPEATS.value, warmup=_WARMUP.value)
  return {'system': 'hpe_jax', **_model_fields(config), 'dtype': config.model.dtype,
          'device': benchmark.jax_devices(), 'jax': jax.__version__,
          'compile_s': round(train_step.compile_s, 2),
          **_timing_fields(timing, config.train.batch_size),
          **_throughput_fields('xla', train_step.flops, timing['step_s']),
          **_throughput_fields('model', model_flops, timing['step_s'])}


def main(argv):
  del argv
  config = benchmark.CONFIG.value
  unknown = set(_PEERS.value) - {'eager', 'tuned'}
  if unknown:
    raise app.UsageError(f'--peers: unknown modes {sorted(unknown)}; use eager, tuned')
  for mode, minimum in (('eager', _MIN_RATIO_EAGER.value), ('tuned', _MIN_RATIO_TUNED.value)):
    if minimum > 0 and mode not in _PEERS.value:
      raise app.UsageError(f'--min_ratio_{mode} needs {mode} in --peers')
  batch = benchmark.config_batch(config)
  load_start = os.getloadavg()[0]
  # Eager peer, hpe_jax, tuned peer: the two timings of the target run back to back (a busy
  # machine drifts), and torch.compile's long compilation comes last. On a GPU each peer hands
  # its cached memory back, and jax allocates as it goes (no preallocation).
  peers, model_flops = {}, None
  if 'eager' in _PEERS.value:
    peers['eager'] = time_peer(config, batch, 'eager', None)
    model_flops = peers['eager']['model_flops_per_step']
    print(json.dumps(peers['eager']), flush=True)
  ours = time_hpe_jax(config, batch, model_flops)
  print(json.dumps(ours), flush=True)
  if _PARTS.value:
    print(json.dumps(_parts_line('hpe_jax', hpe_jax_parts(config, batch),
                                 benchmark.JaxTrainStep.sync, ours['step_ms'])), flush=True)
    if 'eager' in peers:
      peer = torch_peer.PeerTrainStep(config, batch, step_lib.loss_config(config), mode='eager')
      parts = {'forward': peer.forward_losses, 'forward_backward': peer.forward_backward}
      print(json.dumps(_parts_line('torch_eager', parts, peer.sync, peers['eager']['step_ms'])),
            flush=True)
    else:
      print('NOTE: --parts times the eager peer only; add eager to --peers for its line.',
            flush=True)
  if 'tuned' in _PEERS.value:
    peers['tuned'] = time_peer(config, batch, 'tuned', model_flops)
    print(json.dumps(peers['tuned']), flush=True)

  summary = {'load_1min_start': round(load_start, 2),
             'load_1min_end': round(os.getloadavg()[0], 2)}
  failures = []
  for mode, minimum in (('eager', _MIN_RATIO_EAGER.value), ('tuned', _MIN_RATIO_TUNED.value)):
    if mode not in peers:
      continue
    ratio = ours['images_per_s'] / peers[mode]['images_per_s']
    summary[f'hpe_jax_over_torch_{mode}'] = round(ratio, 3)
    if ratio < minimum:
      failures.append(f'hpe_jax / torch {mode} = {ratio:.3f} < {minimum}')
  print(json.dumps(summary), flush=True)
  if failures:
    print('FAIL: ' + '; '.join(failures), flush=True)
    sys.exit(1)
  if _MIN_RATIO_EAGER.value or _MIN_RATIO_TUNED.value:
    print('PASS', flush=True)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)

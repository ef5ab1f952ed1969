"""hpe_jax's train step against its PyTorch peer (torch_peer.py): same model, same batch.

Times, in one run and on the same random batch (uint8 images, joints, masks, depth, has_3d; 2D and
3D samples as the config mixes them): hpe_jax's jitted train step (benchmark.py's), the peer in
eager float32 (as the reference trains) and the peer tuned (channels_last, torch.compile, bfloat16
autocast for a bfloat16 config). Each system is one JSON line, then one line with the ratios
hpe_jax / peer of images/s. The step time is the median over `repeats` of the mean of `steps`
steps, after `warmup` steps; the first step's time (with compilation for torch.compile, after
`lower().compile()` for hpe_jax) is reported apart. Runs on a GPU unchanged (torch.cuda when
available, synchronised around the timing).

Achieved TFLOP/s (and MFU given the device's peak): `xla_*`, hpe_jax's step cost by XLA's cost
analysis (it counts the sub-pixel head's zero taps and elementwise work) over its step time;
`model_*`, the model's matmul and convolution FLOPs (torch's FlopCounterMode on the eager peer,
forward and backward) over each system's step time.

Needs torch. On a GPU, set XLA_PYTHON_CLIENT_PREALLOCATE=false before jax starts its backend so
that the peer, in the same process, finds memory (tools/compare_peer.py does).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable
from typing import Sequence

from flax import nnx
import jax
import ml_collections
import numpy as np
import torch

from hpe_jax import losses
from hpe_jax.errors import ConfigError
from hpe_jax.models import interface
from hpe_jax.models import xla_cpu
from hpe_jax.training import step as step_lib
from tools.lib import benchmark
from tools.lib import torch_peer

PEER_MODES = ('eager', 'tuned')


@dataclasses.dataclass(frozen=True)
class Timing:
  """How each system is timed (`benchmark.time_steps`)."""

  steps: int = 20  # timed steps per repeat
  repeats: int = 3  # the median over repeats is reported
  warmup: int = 3  # untimed steps first (torch.compile may recompile on the 2nd and 3rd)

  def time(self, step: Callable, sync: Callable) -> dict[str, float]:
    return benchmark.time_steps(
      step, sync, steps=self.steps, repeats=self.repeats, warmup=self.warmup
    )


def _timing_fields(timing: dict, batch_size: int) -> dict:
  return {
    'first_step_s': round(timing['first_step_s'], 2),
    'step_ms': round(timing['step_s'] * 1e3, 2),
    'images_per_s': round(batch_size / timing['step_s'], 2),
    'load_1min': round(os.getloadavg()[0], 2),
  }


def _throughput_fields(prefix: str, flops: float | None, step_s: float, peak_tflops: float) -> dict:
  """flops per step -> {prefix_flops_per_step, prefix_tflops_per_s[, prefix_mfu]}."""
  if not flops:
    return {}
  achieved = flops / step_s / 1e12
  fields = {f'{prefix}_flops_per_step': flops, f'{prefix}_tflops_per_s': round(achieved, 3)}
  if peak_tflops > 0:
    fields[f'{prefix}_mfu'] = round(achieved / peak_tflops, 4)
  return fields


def torch_device_name(device: torch.device) -> str:
  if device.type == 'cuda':
    return torch.cuda.get_device_name(device)
  return f'cpu, {torch.get_num_threads()} threads'


def time_peer(
  config: ml_collections.ConfigDict,
  batch: dict[str, np.ndarray],
  mode: str,
  model_flops: float | None,
  *,
  timing: Timing = Timing(),
  peak_tflops: float = 0.0,
) -> dict:
  """-> the peer's JSON line; eager mode counts the model FLOPs per step (`model_flops` is
  the count, if known, for the other modes)."""
  peer = torch_peer.PeerTrainStep(config, batch, losses.loss_config(config), mode=mode)
  times = timing.time(peer.step, peer.sync)
  if mode == 'eager':
    model_flops = peer.step_flops()  # on an untimed step, after the timing
  line = {
    'system': f'torch_{mode}',
    **benchmark.model_fields(config),
    'dtype': 'bfloat16 autocast' if peer.autocast_dtype else 'float32',
    'device': torch_device_name(peer.device),
    'torch': torch.__version__,
    'notes': ', '.join(peer.notes),
    **_timing_fields(times, config.train.batch_size),
    **_throughput_fields('model', model_flops, times['step_s'], peak_tflops),
  }
  del peer
  if torch.cuda.is_available():  # hand the cached memory back before the next system
    torch.cuda.empty_cache()
  return line


def parts_line(
  system: str,
  parts: dict[str, Callable],
  sync: Callable,
  step_ms: float,
  *,
  timing: Timing = Timing(),
) -> dict:
  """{'forward': fn, 'forward_backward': fn} -> a JSON line of their medians in ms (the update
  and the rest: the step minus forward + backward)."""
  parts_ms = {}
  for name, run in parts.items():
    parts_ms[name] = round(timing.time(run, sync)['step_s'] * 1e3, 2)
  parts_ms['update_and_rest'] = round(step_ms - parts_ms['forward_backward'], 2)
  return {'system': system, 'parts_ms': parts_ms}


def hpe_jax_parts(
  config: ml_collections.ConfigDict, batch: dict[str, np.ndarray]
) -> dict[str, Callable]:
  """hpe_jax's forward + losses, and forward + losses + backward, jitted like the step:
  {'forward': () -> loss, 'forward_backward': () -> gradients}."""
  defs, state = step_lib.init_state(config)
  mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  dtype = jax.numpy.dtype(config.model.dtype)
  loss_config = losses.loss_config(config)
  batch = jax.device_put(batch)

  def loss(model):
    images = interface.normalize_images(batch['image'], dtype)
    return losses.compute_losses(model(images), batch, loss_config)[0]

  def forward(model_state):
    return loss(nnx.merge(defs.model, model_state))

  def forward_backward(model_state):
    return nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(nnx.merge(defs.model, model_state))

  options = xla_cpu.compiler_options(mesh)
  return {
    name: functools.partial(jax.jit(fn, compiler_options=options), state['model'])
    for name, fn in (('forward', forward), ('forward_backward', forward_backward))
  }


def time_hpe_jax(
  config: ml_collections.ConfigDict,
  batch: dict[str, np.ndarray],
  model_flops: float | None,
  *,
  timing: Timing = Timing(),
  peak_tflops: float = 0.0,
) -> dict:
  """-> hpe_jax's JSON line."""
  train_step = benchmark.JaxTrainStep(config, batch)
  times = timing.time(train_step.step, train_step.sync)
  return {
    'system': 'hpe_jax',
    **benchmark.model_fields(config),
    'dtype': config.model.dtype,
    'device': benchmark.jax_devices(),
    'jax': jax.__version__,
    'compile_s': round(train_step.compile_s, 2),
    **_timing_fields(times, config.train.batch_size),
    **_throughput_fields('xla', train_step.flops, times['step_s'], peak_tflops),
    **_throughput_fields('model', model_flops, times['step_s'], peak_tflops),
  }


def compare(
  config: ml_collections.ConfigDict,
  *,
  peers: Sequence[str] = PEER_MODES,
  timing: Timing = Timing(),
  parts: bool = False,
  peak_tflops: float = 0.0,
  min_ratios: dict[str, float] | None = None,
  log: Callable[[str], None] = print,
) -> list[str]:
  """Times hpe_jax and the `peers` modes on `config`'s random batch, logging one JSON line per
  system (with `parts`, one more each for hpe_jax's and the eager peer's forward and forward +
  backward alone), then the summary line of ratios.

  `min_ratios`: {mode: the least hpe_jax / peer images/s that passes}. -> the failures, one
  sentence each (empty: passed). Raises ConfigError for an unknown mode or a minimum on a mode
  not timed.
  """
  min_ratios = {mode: minimum for mode, minimum in (min_ratios or {}).items() if minimum > 0}
  unknown = sorted(set(peers) - set(PEER_MODES))
  if unknown:
    raise ConfigError(f'--peers: unknown modes {unknown}; use {", ".join(PEER_MODES)}')
  for mode in min_ratios:
    if mode not in peers:
      raise ConfigError(f'--min_ratio_{mode} needs {mode} in --peers')
  emit = lambda line: log(json.dumps(line))
  batch = benchmark.config_batch(config)
  load_start = os.getloadavg()[0]
  # Eager peer, hpe_jax, tuned peer: the two timings of the target run back to back (a busy
  # machine drifts), and torch.compile's long compilation comes last. On a GPU each peer hands
  # its cached memory back, and jax allocates as it goes (no preallocation).
  lines, model_flops = {}, None
  if 'eager' in peers:
    lines['eager'] = time_peer(config, batch, 'eager', None, timing=timing, peak_tflops=peak_tflops)
    model_flops = lines['eager']['model_flops_per_step']
    emit(lines['eager'])
  ours = time_hpe_jax(config, batch, model_flops, timing=timing, peak_tflops=peak_tflops)
  emit(ours)
  if parts:
    emit(
      parts_line(
        'hpe_jax',
        hpe_jax_parts(config, batch),
        benchmark.JaxTrainStep.sync,
        ours['step_ms'],
        timing=timing,
      )
    )
    if 'eager' in lines:
      peer = torch_peer.PeerTrainStep(config, batch, losses.loss_config(config), mode='eager')
      peer_parts = {'forward': peer.forward_losses, 'forward_backward': peer.forward_backward}
      emit(
        parts_line('torch_eager', peer_parts, peer.sync, lines['eager']['step_ms'], timing=timing)
      )
    else:
      log('NOTE: --parts times the eager peer only; add eager to --peers for its line.')
  if 'tuned' in peers:
    lines['tuned'] = time_peer(
      config, batch, 'tuned', model_flops, timing=timing, peak_tflops=peak_tflops
    )
    emit(lines['tuned'])

  summary = {'load_1min_start': round(load_start, 2), 'load_1min_end': round(os.getloadavg()[0], 2)}
  failures = []
  for mode in PEER_MODES:
    if mode not in lines:
      continue
    ratio = ours['images_per_s'] / lines[mode]['images_per_s']
    summary[f'hpe_jax_over_torch_{mode}'] = round(ratio, 3)
    if ratio < min_ratios.get(mode, 0.0):
      failures.append(f'hpe_jax / torch {mode} = {ratio:.3f} < {min_ratios[mode]}')
  emit(summary)
  return failures

"""Predicting on image files: every person of every image, and per image a 2D overlay, a 3D plot
(models with depth) and the joints as JSON (what `hpe-predict` does with images; its
module doc describes the files). The images and their people come checked (`inputs.check`), the
model loaded (`loading.load_model`): `predict_run` does both first.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import crops
from hpe_jax.inference import image_io
from hpe_jax.inference import inputs
from hpe_jax.inference import outputs
from hpe_jax.inference import pose_model
from hpe_jax.inference import records
from hpe_jax.inference import visualize


def predict_images(
  model: pose_model.PoseModel,
  run: dict,
  people_per_image: dict[str, list[inputs.ImagePerson]],
  out_dir: str,
  on_saved: Callable[[dict], None] | None = None,
) -> list[dict]:
  """Predicts every person of every image and saves the image's outputs (module doc).

  Args:
    model, run: `loading.load_model`'s result.
    people_per_image: `inputs.check`'s people.
    out_dir: an existing directory.
    on_saved: called with each result as soon as its files are written.
  Returns:
    Per image {'image': path, 'files': {'2d', '3d' (None without depth), 'json'}: paths,
    'record': the JSON written, 'people': per person of record['people'] {'prediction':
    PoseModel.predict's arrays, 'image_id': the boxes file's "image_id" (else its "file_name")
    of the person's box, else the image's file name (`outputs.write_coco` makes the ids
    numeric)}}.
  Raises:
    ImageError: an image that cannot be read or a box it cannot be cropped at, or a file that
      cannot be written.
    BoxError: a --bbox `boxes.unusable` refuses in the decoded image (`inputs.check` applies
      the rule from the image's header first).
  """
  results = []
  skipped_outside = 0
  for path, people in people_per_image.items():
    image = image_io.read_image(path)
    kept = []  # (box, box score, image id, who, warnings, crop): one device call for all
    for box, box_score, image_id, entry in people:
      who = f'{path}: {boxes_lib.format_box(box)}'
      who += f' (--boxes entry {entry})' if entry is not None else ''
      warnings = []
      if box is not None:
        # `inputs.check` applied this rule from the image's header; here it holds for the pixels.
        reason = boxes_lib.unusable(box, image.shape)
        if reason and entry is None:
          inputs.check_bbox(path, box, image.shape)  # raises: --bbox is the user's own box
        if reason:
          # A detector's unusable box is one bad detection: the others still count.
          outputs.warn(f'{who} {reason}: skipped')
          skipped_outside += 1
          continue
        outside = boxes_lib.outside_fraction(box, image.shape)
        if outside > boxes_lib.MOSTLY_OUTSIDE:
          warnings.append(
            f'{outside:.0%} of the box lies outside the {image.shape[1]} x {image.shape[0]} '
            'image: the model sees mostly padding'
          )
      try:
        crop = crops.crop_person(image, box, model.image_size)
      except ValueError as e:
        raise image_io.ImageError(f'{path}: {e}') from None
      kept.append((box, box_score, image_id, who, warnings, crop))
    model_outputs = (
      model.predict_inputs(np.stack([k[-1].model_input for k in kept])) if kept else {}
    )
    persons, predicted = [], []
    for i, (box, box_score, image_id, who, warnings, crop) in enumerate(kept):
      prediction = crops.person_pose(crop, {key: value[i] for key, value in model_outputs.items()})
      low = records.low_confidence_warning(prediction['scores'])
      warnings += [low] if low else []
      person = records.person_record(box, prediction, box_score)
      if warnings:
        person['warning'] = '; '.join(warnings)
        for warning in warnings:
          outputs.warn(f'{who}: {warning}' if box is not None else f'{path}: {warning}')
      persons.append(person)
      predicted.append({'prediction': prediction, 'image_id': image_id})
    files = outputs.output_paths(out_dir, path)
    # The JSON first: it holds every person, whatever the pictures cost or fail to write.
    record = records.joints_record(path, image.shape, persons, run)
    outputs.write_image_json(files['json'], record)
    image_io.save_image(files['2d'], visualize.draw_people(image, persons))
    with_3d = [p for p in persons if p['joints_3d'] is not None]
    if run['depth'] and with_3d:
      visualize.plot_3d_people(
        [np.array(p['joints_3d']) for p in with_3d],
        files['3d'],
        labels=[f'person {i + 1}: {boxes_lib.format_box(p["box"])}' for i, p in enumerate(with_3d)],
        title=f'{os.path.basename(path)}: scaled to canonical limb lengths',
      )
    else:
      files['3d'] = None
    results.append({'image': path, 'files': files, 'record': record, 'people': predicted})
    if on_saved:
      on_saved(results[-1])
  if skipped_outside > 1:
    outputs.warn(f'{skipped_outside} boxes could not be used in their images and were skipped')
  return results

"""hpe_jax.analysis.report: summary.md, angles.png and report.html from hand-made data, and the
report opened in Debian's headless chromium (skipped where it or playwright is absent)."""

from __future__ import annotations

import html
import io
import os

import av
from matplotlib import colors
from matplotlib import image as mpl_image
import numpy as np
import pytest

from hpe_jax.analysis import angles
from hpe_jax.analysis import report
from hpe_jax.analysis.repetitions import Repetition

FPS = 24
FRAMES = 48  # 2.0 s
CHROMIUM = '/usr/bin/chromium'
REPS = {
  0: [Repetition(6, 18, 0.25, 0.75, 10.0, 80.0), Repetition(30, 38, 1.25, 1.6, 12.0, 85.0)],
  1: [Repetition(22, 26, 0.9, 1.1, 20.0, 60.0)],
}


def _summary() -> dict:
  track_angles = {
    name: {'min': 12.3, 'max': 98.7, 'mean': 45.6, 'frames_measured': 40} for name in angles.NAMES
  }
  track_angles['neck_flexion'] = {'min': None, 'max': None, 'mean': None, 'frames_measured': 0}
  return {
    'source': 'predictions/clip.jsonl',
    'video': 'videos/clip.mp4',
    'fps': 24.0,
    'frames': FRAMES,
    'duration_s': 2.0,
    'angles_from': '3d',
    'note': None,
    'up': {'method': 'camera', 'note': 'assumes the camera was held level'},
    'min_score': 0.3,
    'tracks': [
      {'track': 0, 'frames': 48, 'first_s': 0.0, 'last_s': 1.96, 'angles': track_angles},
      {'track': 1, 'frames': 48, 'first_s': 0.0, 'last_s': 1.96, 'angles': track_angles},
    ],
    'skipped_tracks': [{'track': 3, 'frames': 4, 'reason': 'fewer than 10 frames'}],
    'repetitions': {
      'angle': 'knee_flexion_left',
      'tracks': {
        str(track): {
          'count': len(reps),
          'repetitions': [r.as_dict() for r in reps],
          'thresholds': {'low_deg': 31.0, 'high_deg': 62.5, 'rest': 'low'},
        }
        for track, reps in REPS.items()
      },
    },
  }


def _series() -> dict:
  """Constant angles per track: the lines are flat, so columns differ only by the shading."""
  time_s = np.arange(FRAMES) / FPS
  return {
    track: {
      'time_s': time_s,
      'angles': {n: np.full(FRAMES, 30.0 + 40 * track) for n in angles.NAMES},
    }
    for track in (0, 1)
  }


def _write_video(path: str) -> None:
  """FRAMES frames of 64x48 H.264 at FPS: a moving gradient."""
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    ramp = np.add.outer(np.arange(48), np.arange(64))
    for i in range(FRAMES):
      gray = ((ramp + 5 * i) % 256).astype(np.uint8)
      frame = av.VideoFrame.from_ndarray(np.stack([gray, 255 - gray, gray], -1), format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope='module')
def made(tmp_path_factory) -> dict:
  """A report directory: angles.png, the video one level up, report.html embedding both."""
  root = tmp_path_factory.mktemp('report')
  out = root / 'clip_analysis'
  out.mkdir()
  paths = {'png': str(out / 'angles.png'), 'video': str(root / 'clip_2d.mp4')}
  paths['html'] = str(out / 'report.html')
  _write_video(paths['video'])
  summary = _summary()
  report.plot_angles(paths['png'], _series(), REPS, 'knee_flexion_left')
  markdown = report.summary_markdown(summary)
  report.write_html(paths['html'], summary, markdown, paths['png'], video=paths['video'])
  return {**paths, 'summary': summary, 'markdown': markdown}


def test_markdown_shows_the_numbers_and_dashes_for_unmeasured(made):
  text = made['markdown']
  lines = text.splitlines()
  knee = next(line for line in lines if line.startswith('| knee_flexion_left '))
  assert [c.strip() for c in knee.strip('|').split('|')] == [
    'knee_flexion_left',
    '12.3',
    '98.7',
    '45.6',
    '40 / 48',
  ]
  neck = next(line for line in lines if line.startswith('| neck_flexion '))
  assert [c.strip() for c in neck.strip('|').split('|')][1:4] == ['-', '-', '-']
  rep = next(line for line in lines if line.startswith('| 2 ') and '1.25' in line)
  assert [c.strip() for c in rep.strip('|').split('|')] == [
    '2',
    '1.25',
    '1.60',
    '0.35',
    '12.0',
    '85.0',
  ]
  for expected in (
    'Track 0: 2 repetitions (thresholds: low 31.0°, high 62.5°, rest low)',
    'Track 1: 1 repetition (',
    '> Up direction (camera): assumes the camera was held level',
    'track 3 (4 frames: fewer than 10 frames)',
    '48 frames at 24 fps (2.00 s)',
  ):
    assert expected in text
  # Padded columns: every row of a table is as wide as its header.
  table = [line for line in lines if line.startswith('| ')][:3]
  assert len({len(line) for line in table}) == 1


def test_markdown_tolerates_a_minimal_summary_and_shows_its_note():
  summary = {'frames': 3, 'angles_from': '2d', 'note': '2D only', 'up': {'method': 'camera'}}
  text = report.summary_markdown({**summary, 'tracks': [], 'repetitions': None})
  assert text.startswith('# Movement analysis')
  for expected in ('3 frames', '2D image joints', '\n> 2D only\n', 'up direction: camera'):
    assert expected in text


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """(start, stop) of each run of True, runs split only by a gridline (2 px or less) joined."""
  edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
  runs = []
  for start, stop in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]):
    if runs and start - runs[-1][1] <= 2:
      start = runs.pop()[0]
    runs.append((start, stop))
  return runs


def test_plot_has_its_size_and_shows_each_repetition_span(made):
  png = mpl_image.imread(made['png'])[..., :3] * 255
  assert png.shape[:2] == (
    round(report.PANEL_HEIGHT_IN * len(angles.GROUPS) * report.PLOT_DPI),
    round(report.PLOT_WIDTH_IN * report.PLOT_DPI),
  )
  runs = {}
  for track in REPS:
    rgb = np.array(colors.to_rgb(f'C{track}')) * 255
    tint = 255 + report._SHADE_ALPHA * (rgb - 255)  # the shading over white
    tinted = (np.abs(png - tint).max(-1) < 4).sum(0)  # per pixel column
    runs[track] = _runs(tinted > 100)  # shaded in most panels
  # Track 0's two spans, track 1's one between them, widths in proportion to the durations.
  assert len(runs[0]) == 2 and len(runs[1]) == 1
  (a0, a1), (b0, b1), (c0, c1) = runs[0][0], runs[1][0], runs[0][1]
  assert a1 < b0 < b1 < c0
  width = (a1 - a0) / 0.5
  assert (b1 - b0) / width == pytest.approx(0.2, abs=0.02)
  assert (c1 - c0) / width == pytest.approx(0.35, abs=0.02)
  assert (c0 - a0) / width == pytest.approx(1.0, abs=0.02)


def test_plot_envelope_keeps_spikes_and_gaps():
  time_s = np.arange(10_000) / 100.0
  values = np.zeros(10_000)
  values[1234] = 90.0
  values[5000:6000] = np.nan  # 10 s unmeasured: whole buckets
  x, y = report._envelope(time_s, values, 0.0, 100.0, 50)
  assert x.shape == y.shape == (100,)
  assert np.nanmax(y) == 90.0
  assert np.isnan(y[2 * 25 : 2 * 30]).all() and np.isfinite(y[: 2 * 25]).all()


def test_html_is_self_contained_with_tables_definitions_and_the_video(made):
  text = open(made['html'], encoding='utf-8').read()
  for external in ('src="http', "src='http", 'href="http', '<link', '<script'):
    assert external not in text
  assert text.count('data:video/mp4;base64,') == 1
  assert text.count('data:image/png;base64,') == 1
  for angle in angles.ANGLES:
    assert html.escape(angle.definition) in text
  assert 'Track 0: 2 repetitions' in text and 'Track 1: 1 repetition' in text
  assert '<td class="n">98.7</td>' in text and '<td class="n">40 / 48</td>' in text
  assert 'assumes the camera was held level' in text


def test_html_links_a_video_too_big_to_embed(made, tmp_path, monkeypatch):
  monkeypatch.setattr(report, 'EMBED_VIDEO_MAX_BYTES', 1000)
  path = os.path.join(os.path.dirname(made['html']), 'big.html')
  report.write_html(path, made['summary'], made['markdown'], made['png'], video=made['video'])
  text = open(path, encoding='utf-8').read()
  assert 'data:video' not in text and '<video' not in text
  assert 'href="../clip_2d.mp4"' in text and 'not embedded' in text


def test_html_without_video_says_so_and_an_unwritable_path_is_one_line(made, tmp_path):
  path = str(tmp_path / 'report.html')
  report.write_html(path, made['summary'], made['markdown'], made['png'])
  assert 'No video' in open(path, encoding='utf-8').read()
  missing = str(tmp_path / 'no' / 'report.html')
  with pytest.raises(report.ReportError, match=r'^cannot write .*no/report.html') as caught:
    report.write_html(missing, made['summary'], made['markdown'], made['png'])
  assert '\n' not in str(caught.value)
  assert sorted(os.listdir(tmp_path)) == ['report.html']


@pytest.fixture(scope='module')
def browser(made):
  """report.html opened in Debian's headless chromium through playwright: one launch."""
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'{CHROMIUM} is absent (.ci/run installs it as root with apt-get)')
  sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed')
  with sync_api.sync_playwright() as p:
    chromium = p.chromium.launch(
      executable_path=CHROMIUM,
      args=[
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    )
    page = chromium.new_page(viewport={'width': 1280, 'height': 800})
    page.goto('file://' + made['html'])
    # Metadata loaded, or an error the test reports.
    page.wait_for_function(
      '(v => v.readyState >= 1 || v.error !== null)(document.querySelector("video"))',
      timeout=10_000,
    )
    yield page
    chromium.close()


def test_browser_plays_the_embedded_video(browser):
  video = browser.evaluate(
    '(v => ({duration: v.duration, width: v.videoWidth, height: v.videoHeight,'
    ' error: v.error && v.error.message}))(document.querySelector("video"))'
  )
  assert video['error'] is None
  assert video['duration'] == pytest.approx(FRAMES / FPS, abs=1 / FPS)
  assert (video['width'], video['height']) == (64, 48)


def test_browser_shows_the_plot(browser, made):
  shot = mpl_image.imread(io.BytesIO(browser.screenshot(full_page=True)))[..., :3]
  box = browser.locator('img.plot').bounding_box()
  png = mpl_image.imread(made['png'])[..., :3]
  # The plot is drawn at its own size (it fits the page): the screenshot's region is the PNG.
  assert (round(box['width']) - 2, round(box['height']) - 2) == (png.shape[1], png.shape[0])
  top, left = round(box['y']) + 1, round(box['x']) + 1
  region = shot[top : top + png.shape[0], left : left + png.shape[1]]
  assert region.std() > 0.05
  assert np.abs(region - png).mean() < 0.02

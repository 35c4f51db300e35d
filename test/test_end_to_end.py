# Copyright 2026 The scene_reloc authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Posed frames -> memorize -> localize, through the CLI a user runs."""

import json
import os
import subprocess
import sys

from conftest import SMALL_CFG
import numpy as np
import pytest

from scene_reloc.geometry import pose_error
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.relocalizer import BAD_INPUT, Relocalizer
from scene_reloc_training.cli import main as cli

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')


def test_memorized_map_localizes_held_out_frames_to_centimetres(small_scene, small_map):
    root, _, query = small_scene
    reloc = Relocalizer.from_file(small_map[0], device='cpu')
    folder = PosedFrameFolder(root)
    errors = []
    for fr in folder.frames(query):
        res = reloc.localize(fr.load_color(), fr.K)
        assert res.success == (res.world_from_cam is not None)
        errors.append(pose_error(res.world_from_cam, fr.load_pose()) if res.success
                      else (np.inf, np.inf))
        if res.success:
            assert res.num_inliers >= reloc.config.min_inliers
            assert res.covariance.shape == (6, 6)
    e = np.array(errors)
    recall = np.mean((e[:, 0] < 0.05) & (e[:, 1] < 5))
    assert recall >= 0.9, e
    assert np.median(e[:, 0]) < 0.03


def test_plain_src_leaf_centres_also_localize_but_coarser(small_scene, small_map):
    root, _, query = small_scene
    reloc = Relocalizer.from_file(small_map[0], device='cpu')
    reloc.config.refinement = 'none'
    reloc.config.pnp.max_reproj_error = 10.0
    reloc.config.max_reprojection_error = 8.0
    fr = PosedFrameFolder(root).frames(query[:6])
    res = [reloc.localize(f.load_color(), f.K) for f in fr]
    ok = [pose_error(r.world_from_cam, f.load_pose()) for r, f in zip(res, fr) if r.success]
    assert len(ok) >= 4
    # 16 x 16 leaves over a 5 x 4 m room quantise to tens of centimetres; the leaf-centre
    # poses must still be in the right place, and the in-leaf refinement must beat them.
    centroid_cm = np.median([t for t, _ in ok]) * 100
    assert centroid_cm < 100
    reloc.config = Relocalizer.from_file(small_map[0], device='cpu').config
    refined = [reloc.localize(f.load_color(), f.K) for f in fr]
    refined_cm = np.median([pose_error(r.world_from_cam, f.load_pose())[0] * 100
                            for r, f in zip(refined, fr) if r.success])
    assert refined_cm < centroid_cm / 5


def test_bad_images_are_refused_with_a_reason(small_map):
    reloc = Relocalizer.from_file(small_map[0], device='cpu')
    K = np.array([[144.0, 0, 79.5], [0, 144.0, 59.5], [0, 0, 1]])
    for img, k in ((np.zeros((120, 160), np.uint8), K),
                   (np.zeros((120, 160, 3), np.float32), K),
                   (np.zeros((120, 160, 3), np.uint8), np.eye(2))):
        res = reloc.localize(img, k)
        assert not res.success and res.reason == BAD_INPUT and res.world_from_cam is None
    noise = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    res = reloc.localize(noise, K)
    assert not res.success and res.world_from_cam is None and res.reason != 'ok'


def test_cli_memorize_evaluate_localize(small_scene, tmp_path):
    root, mem, query = small_scene
    out = str(tmp_path / 'cli.map')
    lst = tmp_path / 'mem.txt'
    lst.write_text('\n'.join(mem[:10]) + '\n')
    assert cli(['memorize', '--data', root, '--frames', str(lst), '--out', out, '--k1', '8',
                '--k2', '8', '--iterations', '150', '--augmentations', '1', '--quiet',
                '--device', 'cpu']) == 0
    metrics_path = str(tmp_path / 'm.json')
    report = str(tmp_path / 'report')
    assert cli(['evaluate', '--map', out, '--data', root, '--frames',
                os.path.join(root, 'query.txt'), '--json', metrics_path, '--report', report,
                '--quiet']) == 0
    m = json.load(open(metrics_path))
    for key in ('n_queries', 'n_localized', 'median_translation_cm', 'median_rotation_deg',
                'recall_5cm_5deg', 'recall_10cm_10deg', 'recall_2cm_2deg',
                'seconds_per_query_p50', 'seconds_per_query_p95', 'train_seconds',
                'map_megabytes'):
        assert key in m, key
    assert m['n_queries'] == len(query) and m['recall_10cm_10deg'] > 0.5
    for f in ('index.html', 'report.png', 'queries.csv', 'metrics.json'):
        assert os.path.getsize(os.path.join(report, f)) > 0
    corrupt = tmp_path / 'corrupt.png'
    corrupt.write_bytes(b'not an image')
    r = subprocess.run([SCRIPT, 'localize', '--map', out, '--intrinsics',
                        os.path.join(root, 'camera-intrinsics.txt'),
                        os.path.join(root, query[0] + '.color.png'), str(corrupt)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 2
    assert lines[0]['success'] and len(lines[0]['orientation_xyzw']) == 4
    assert len(lines[0]['covariance']) == 36
    assert not lines[1]['success'] and lines[1]['reason'] == 'bad_input'


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert cli(['evaluate', '--map', str(tmp_path / 'none.map'), '--data', str(tmp_path),
                '--frames', 'all', '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and 'Traceback' not in err
    with pytest.raises(SystemExit):
        cli(['memorize', '--help'])
    assert '--backbone-weights' in capsys.readouterr().out


def test_resume_continues_an_interrupted_training(small_scene, tmp_path):
    from scene_reloc.scene_map import load_scene_map
    from scene_reloc_training.memorize import region_training
    from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig
    root, mem, _ = small_scene
    frames = PosedFrameFolder(root).frames(mem[:6])
    cfg = MemorizeConfig(**{**SMALL_CFG, 'iterations': 200, 'augmentations': 0})
    full = str(tmp_path / 'full.map')
    memorize(frames, full, cfg, progress=False)

    real_ce = region_training.F.cross_entropy
    calls = {'n': 0}

    def interrupted_ce(*a, **k):
        calls['n'] += 1
        if calls['n'] > 2 * 150:  # two losses per iteration: stop in iteration 151
            raise KeyboardInterrupt
        return real_ce(*a, **k)

    part = str(tmp_path / 'part.map')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(region_training.F, 'cross_entropy', interrupted_ce)
        with pytest.raises(KeyboardInterrupt):
            memorize(frames, part, cfg, progress=False)
    assert os.path.exists(part + '.ckpt') and not os.path.exists(part)
    memorize(frames, part, cfg, resume=True, progress=False)
    assert not os.path.exists(part + '.ckpt')
    _, a = load_scene_map(full)
    _, b = load_scene_map(part)
    # Resumed from iteration 100 with model, optimiser, schedule and sampler state: the same
    # result as the uninterrupted run.
    for k in a:
        if k.startswith('head.'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_speckled_depth_that_the_edge_mask_removes_whole_says_what_to_do(small_scene, tmp_path):
    import shutil

    import cv2
    root, mem, _ = small_scene
    copy = str(tmp_path / 'speckled')
    shutil.copytree(root, copy)
    for stem in mem[:4]:
        path = os.path.join(copy, f'{stem}.depth.png')
        d = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        d[::2, ::2] = 0                               # holes everywhere, as a speckled sensor
        d[1::2, 1::2] = 0
        cv2.imwrite(path, d)
    with open(os.path.join(copy, 'four.txt'), 'w') as f:
        f.write('\n'.join(mem[:4]))
    assert cli(['memorize', '--data', copy, '--frames', os.path.join(copy, 'four.txt'),
                '--out', str(tmp_path / 'm.map'), '--quiet', '--device', 'cpu']) == 2
    assert not os.path.exists(tmp_path / 'm.map')
    from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig
    with pytest.raises(ValueError, match='--edge-margin 0'):
        memorize(PosedFrameFolder(copy).frames(mem[:4]), str(tmp_path / 'm.map'),
                 MemorizeConfig(**SMALL_CFG), progress=False)

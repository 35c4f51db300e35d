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

"""Scene landmark detection: selection, visibility, heatmaps, weighted PnP, end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scene_reloc.backbones import FeatureExtractor
from scene_reloc.geometry import invert_pose, look_at, pose_error, project, transform_points
from scene_reloc.landmark_head import heatmap_peaks, heatmap_targets
from scene_reloc.pnp import PnPConfig, solve_pnp
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.relocalizer import Relocalizer
from scene_reloc.scene_map import load_scene_map, save_scene_map, SceneMapError
from scene_reloc_training.memorize.feature_buffer import extract_frame
from scene_reloc_training.memorize.landmarks import select_landmarks, visibility
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig
from scene_reloc_training.memorize.scene_coordinates import scene_coordinate_image

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')
K = np.array([[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]])


def test_visibility_needs_the_depth_to_agree():
    pose = np.eye(4)                       # camera at the origin looking along +z
    depth = np.full((240, 320), 2.0, np.float32)   # a wall 2 m away
    pts = np.array([[0.1, 0.1, 2.0],       # on the wall: visible
                    [0.1, 0.1, 3.0],       # behind the wall: occluded
                    [5.0, 0.0, 2.0],       # outside the image
                    [0.0, 0.0, -1.0]])     # behind the camera
    vis, xy = visibility(pts, [pose], [K], [depth])
    assert vis[0].tolist() == [True, False, False, False]
    np.testing.assert_allclose(xy[0, 0], [169.5, 129.5])


def test_heatmap_peaks_are_sub_cell_and_targets_peak_at_one():
    xy_true = torch.tensor([[[43.3, 21.8], [100.0, 60.0]]])
    vis = torch.tensor([[True, False]])
    t = heatmap_targets(xy_true, vis, 15, 20)
    assert t.shape == (1, 2, 15, 20)
    assert float(t[0, 0].max()) == 1.0 and float(t[0, 1].max()) == 0.0
    # A Gaussian blob (as a trained head outputs) is located to well under a cell (8 px).
    g = (xy_true[0, :1] + 0.5) / 8 - 0.5
    ys, xs = torch.meshgrid(torch.arange(15.0), torch.arange(20.0), indexing='ij')
    blob = torch.exp(-((xs - g[0, 0]) ** 2 + (ys - g[0, 1]) ** 2) / 2)[None]
    xy, conf = heatmap_peaks(blob)
    assert torch.linalg.norm(xy[0] - xy_true[0, 0]) < 1.5
    assert 0.5 < float(conf[0]) <= 1.0


def test_weighted_pnp_trusts_confident_points_more():
    rng = np.random.default_rng(0)
    world_from_cam = look_at([0.3, -0.2, 0.1], [0.5, 0.4, 3.0], up=(0, -1, 0))
    X = rng.uniform([-1.5, -1, 2], [1.5, 1, 4], (80, 3))
    uv, _ = project(transform_points(invert_pose(world_from_cam), X), K)
    noisy = rng.random(80) < 0.5
    uv = uv + rng.normal(0, 0.1, uv.shape) + noisy[:, None] * rng.normal(0, 2.5, uv.shape)
    w = np.where(noisy, 0.05, 1.0)
    cfg = PnPConfig(max_reproj_error=12.0)
    plain = solve_pnp(uv, X, K, (320, 240), cfg)
    weighted = solve_pnp(uv, X, K, (320, 240), cfg, weights=w)
    assert pose_error(weighted.world_from_cam, world_from_cam)[0] < \
        0.7 * pose_error(plain.world_from_cam, world_from_cam)[0]


def test_selection_spreads_landmarks_and_covers_every_frame(small_scene):
    root, mem, _ = small_scene
    frames = PosedFrameFolder(root).frames(mem)
    ex = FeatureExtractor('handcrafted', device='cpu')
    feats, depths = [], []
    for f in frames:
        d = f.load_depth()
        feats.append(extract_frame(ex, f.load_color(),
                                   scene_coordinate_image(d, f.K, f.load_pose()), 1024))
        depths.append(d)
    poses = [f.load_pose() for f in frames]
    lms = select_landmarks(feats, poses, [f.K for f in frames], depths, num=80,
                           min_per_frame=10)
    assert 40 <= len(lms.xyz) <= 100
    dist = np.linalg.norm(lms.xyz[:, None] - lms.xyz[None], axis=-1) + np.eye(len(lms.xyz))
    assert dist.min() >= 0.05 - 1e-6
    assert lms.coverage()[0] >= 10
    assert np.all(lms.visible.sum(0) >= 1)
    np.testing.assert_allclose(np.linalg.norm(lms.desc, axis=1), 1.0, atol=1e-5)


def _evaluate(reloc, root, query):
    errs = []
    for fr in PosedFrameFolder(root).frames(query):
        res = reloc.localize(fr.load_color(), fr.K)
        errs.append(pose_error(res.world_from_cam, fr.load_pose()) if res.success
                    else (np.inf, np.inf))
    e = np.array(errs)
    return np.median(e[:, 0]), np.mean((e[:, 0] < 0.05) & (e[:, 1] < 5))


def test_landmark_map_localizes_held_out_frames(sld_scene):
    root, query, path, summary = sld_scene
    manifest, tensors = load_scene_map(path)
    assert manifest['head_type'] == 'landmark_detector'
    assert tensors['landmarks.xyz'].shape == (summary['landmarks'], 3)
    reloc = Relocalizer.from_file(path, device='cpu')
    median, recall = _evaluate(reloc, root, query)
    assert recall >= 0.8 and median < 0.04, (median, recall)
    # Raw heatmap peaks localize too, but snapping to keypoints is what makes it precise.
    reloc.config.refinement = 'none'
    median_raw, recall_raw = _evaluate(reloc, root, query)
    assert recall_raw >= 0.6
    assert median <= median_raw + 0.005


def test_landmark_map_without_landmarks_is_refused(sld_scene, tmp_path):
    manifest, tensors = load_scene_map(sld_scene[2])
    del tensors['landmarks.xyz']
    bad = str(tmp_path / 'bad.map')
    save_scene_map(bad, tensors, manifest)
    with pytest.raises(SceneMapError, match='lacks tensors'):
        load_scene_map(bad)


def test_select_landmarks_cli_writes_a_plot(small_scene, tmp_path):
    root, mem, _ = small_scene
    out = str(tmp_path / 'lm.png')
    r = subprocess.run([SCRIPT, 'select-landmarks', '--data', root, '--frames',
                        os.path.join(root, 'memorize.txt'), '--out', out, '--landmarks', '60',
                        '--device', 'cpu', '--csv', str(tmp_path / 'lm.csv')],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary['landmarks'] >= 30 and os.path.getsize(out) > 10_000
    rows = np.loadtxt(tmp_path / 'lm.csv', delimiter=',', skiprows=1)
    assert rows.shape == (summary['landmarks'], 5)


def test_triangulated_tracks_land_on_the_surface(small_scene):
    """Without depth, pycolmap triangulates keypoint tracks from the known poses."""
    from scene_reloc_training.memorize.triangulation import triangulated_candidates
    root, mem, _ = small_scene
    frames = PosedFrameFolder(root).frames(mem)
    ex = FeatureExtractor('handcrafted', device='cpu')
    nan = np.full((120, 160, 3), np.nan, np.float32)
    feats = [extract_frame(ex, f.load_color(), nan, 1024) for f in frames]
    poses = [f.load_pose() for f in frames]
    xyz, obs, _, _, desc, tracks = triangulated_candidates(
        feats, poses, [f.K for f in frames], [(160, 120)] * len(frames))
    assert len(xyz) >= 50 and np.all(obs >= 3)
    # Compare with the scene coordinates (from the depth we did not use) at the first view.
    errs = []
    for p, track in zip(xyz, tracks):
        f, k = track[0]
        sc = scene_coordinate_image(frames[f].load_depth(), frames[f].K, poses[f], 0)
        u, v = np.round(feats[f].kp_xy[k]).astype(int)
        if np.all(np.isfinite(sc[v, u])):
            errs.append(np.linalg.norm(sc[v, u] - p))
    assert np.median(errs) < 0.03, np.median(errs)


def test_landmark_map_from_frames_without_depth(small_scene, tmp_path):
    root, mem, query = small_scene
    nodepth = tmp_path / 'nodepth'
    nodepth.mkdir()
    for name in os.listdir(root):
        if not name.endswith('.depth.png'):
            os.symlink(os.path.join(root, name), nodepth / name)
    folder = PosedFrameFolder(str(nodepth))
    path = str(tmp_path / 'sld.map')
    summary = memorize(folder.frames(mem), path, MemorizeConfig(
        backbone='handcrafted', device='cpu', head='landmark_detector', landmarks=80,
        landmark_iterations=150, augmentations=1, max_keypoints=1024), progress=False)
    assert summary['landmarks'] >= 30
    reloc = Relocalizer.from_file(path, device='cpu')
    res = [reloc.localize(f.load_color(), f.K) for f in PosedFrameFolder(root).frames(query)]
    assert sum(r.success for r in res) >= 1  # tiny images, short training: it runs end to end

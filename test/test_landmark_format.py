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

"""Landmark map format 2: re-detections, cell labels, float16 heads, old maps, matching."""

import numpy as np
import pytest
import torch

from scene_reloc.geometry import invert_pose, look_at, pose_error, project, transform_points
from scene_reloc.landmark_head import LandmarkDetector, LandmarkHeadConfig
from scene_reloc.pnp import PnPConfig, recollect_inliers, refine_weighted, solve_pnp
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.relocalizer import Relocalizer
from scene_reloc.scene_map import load_scene_map, save_scene_map, SceneMapError
from scene_reloc_training.memorize.feature_buffer import FrameFeatures
from scene_reloc_training.memorize.landmark_training import cell_labels
from scene_reloc_training.memorize.landmarks import (
    auto_landmark_count,
    auto_observation_count,
    observation_descriptors,
    redetections,
)

K = np.array([[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]])


def _frame(kp_xy, kp_desc):
    kp_desc = torch.tensor(kp_desc, dtype=torch.float32)
    n = len(kp_xy)
    return FrameFeatures(torch.zeros(1, 1, kp_desc.shape[1]), np.zeros((1, 1, 3)),
                         np.asarray(kp_xy, np.float32), np.ones(n), kp_desc,
                         np.zeros((n, 3)))


def test_redetections_count_keypoints_near_the_projection_and_average_their_descriptors():
    # Two points, two frames. Point 0 is re-detected in both frames (within 3 px), point 1
    # only in frame 1 (in frame 0 the nearest keypoint is 5 px away); frame 0 does not see
    # point 1 at all in the second case below.
    vis = np.array([[True, True], [True, True]])
    xy = np.array([[[10.0, 10.0], [50.0, 50.0]], [[20.0, 20.0], [60.0, 60.0]]], np.float32)
    frames = [_frame([[11.0, 10.0], [55.0, 50.0]], [[1.0, 0.0], [0.0, 1.0]]),
              _frame([[20.0, 22.0], [60.0, 60.5]], [[0.0, 1.0], [0.6, 0.8]])]
    count, desc = redetections(vis, xy, frames, radius_px=3.0)
    assert count.tolist() == [2, 1]
    np.testing.assert_allclose(desc[0], np.array([1.0, 1.0]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(desc[1], [0.6, 0.8], atol=1e-6)
    obs = observation_descriptors(vis, xy, frames, per_landmark=3, radius_px=3.0)
    assert obs.shape == (2, 3, 2)
    np.testing.assert_allclose(obs[0, :2], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(obs[1], [[0.6, 0.8], [0, 0], [0, 0]], atol=1e-6)
    vis[0, 0] = False                      # frame 0 does not see point 0: not counted there
    count, _ = redetections(vis, xy, frames, radius_px=3.0)
    assert count.tolist() == [1, 1]


def test_landmark_count_grows_with_the_frames():
    assert [auto_observation_count(n) for n in (10, 20, 100, 500)] == [3, 3, 6, 8]
    assert auto_landmark_count(2) == 300
    assert auto_landmark_count(20) == 1000
    assert auto_landmark_count(100) == 5000
    assert auto_landmark_count(1000) == 5000
    assert auto_landmark_count(30) > auto_landmark_count(20)


def test_cell_labels_give_each_cell_its_nearest_landmark():
    D, H, W, L = 4, 3, 5, 3
    buffer = {'grid': torch.arange(2 * D * H * W, dtype=torch.float16).reshape(2, D, H, W),
              # image 0: landmarks 0 and 1 in cell (row 1, col 2): 1 is nearer its centre;
              # landmark 2 is invisible. Image 1: landmark 2 in cell (0, 0), 0 outside.
              'xy': torch.tensor([[[16.0, 8.0], [19.0, 11.0], [3.0, 3.0]],
                                  [[-20.0, 3.0], [100.0, 100.0], [3.5, 3.5]]]),
              'visible': torch.tensor([[True, True, False], [True, False, True]])}
    cells, labels = cell_labels(buffer, L)
    assert cells.shape == (2 * H * W, D)
    # A cell's descriptor is the grid's column at that cell.
    torch.testing.assert_close(cells[1 * W + 2], buffer['grid'][0, :, 1, 2])
    want = np.full(2 * H * W, L)
    want[1 * W + 2] = 1                    # 19.5/8 = 2.44 -> column 2; 11.5/8 -> row 1
    want[H * W + 0] = 2
    assert labels.tolist() == want.tolist()


def test_float16_heads_give_the_same_heatmaps():
    torch.manual_seed(0)
    cfg = LandmarkHeadConfig(version=2, in_dim=16, hidden=32, num_landmarks=50,
                             landmarks_per_head=25)
    net = LandmarkDetector(cfg).eval()
    half = LandmarkDetector(cfg).eval()
    half.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    x = torch.nn.functional.normalize(torch.randn(1, 16, 12, 16), dim=1)
    with torch.no_grad():
        p, q = net.probabilities(x), half.probabilities(x)
    assert p.shape == (1, 50, 12, 16)
    # Each head's landmarks and its "none" share one softmax: probabilities sum to <= 1.
    assert float(p[0, :25].sum(0).max()) <= 1.0 + 1e-5
    assert float((p - q).abs().max()) < 1e-3


def test_inliers_are_recollected_after_ransac():
    rng = np.random.default_rng(1)
    world_from_cam = look_at([0.2, -0.1, 0.0], [0.4, 0.3, 3.0], up=(0, -1, 0))
    X = rng.uniform([-1.5, -1, 2], [1.5, 1, 4], (120, 3))
    uv, _ = project(transform_points(invert_pose(world_from_cam), X), K)
    uv = uv + rng.normal(0, 0.5, uv.shape)
    uv[100:] += rng.uniform(30, 60, (20, 2))          # 20 gross outliers
    # Start from a slightly wrong pose that only half of the good points agree with.
    start = world_from_cam.copy()
    start[:3, 3] += [0.01, 0.0, 0.0]
    cfg = PnPConfig(max_reproj_error=3.0)
    res = np.linalg.norm(project(transform_points(invert_pose(start), X), K)[0] - uv, axis=1)
    inliers = res < 1.0
    assert 5 < inliers[:100].sum() < 95
    pose, inl = recollect_inliers(start, inliers, uv, X, K, cfg)
    assert inl[:100].sum() >= 97 and not inl[100:].any()
    # It lands on the least-squares pose of all the good points (which the start was 1 cm from).
    best = refine_weighted(start, uv[:100], X[:100], K, np.ones(100))
    assert pose_error(pose, best)[0] < 1e-4 and pose_error(start, best)[0] > 5e-3
    off = recollect_inliers(start, inliers, uv, X, K, PnPConfig(refine_rounds=0))
    assert np.array_equal(off[1], inliers)
    sol = solve_pnp(uv, X, K, (320, 240), cfg)
    assert sol.inliers[:100].sum() >= 97 and not sol.inliers[100:].any()


def _as_format_1(tensors, manifest):
    """Return the map as one written before format 2 (no version, one descriptor)."""
    manifest = dict(manifest, head=dict(manifest['head']))
    cfg = dict(manifest['head']['config'])
    del cfg['version']
    manifest['head']['config'] = cfg
    tensors = {k: v for k, v in tensors.items() if k != 'landmarks.observations'}
    return tensors, manifest


def test_old_landmark_maps_load_and_future_ones_are_refused(sld_scene, tmp_path):
    root, query, path, _ = sld_scene
    manifest, tensors = load_scene_map(path)
    assert manifest['head']['config']['version'] == 2
    assert tensors['landmarks.observations'].dtype == np.int8
    assert all(v.dtype == np.float16 for k, v in tensors.items() if k.startswith('head.'))
    old = str(tmp_path / 'old.map')
    save_scene_map(old, *_as_format_1(tensors, manifest))
    # A map without a format number is read as format 1: here a format 2 head under it
    # does not fit, and the message says so (a real format 1 map loads; see below).
    with pytest.raises(SceneMapError, match='does not match'):
        Relocalizer.from_file(old, device='cpu')
    future = dict(manifest, head={'config': dict(manifest['head']['config'], version=3)})
    bad = str(tmp_path / 'future.map')
    save_scene_map(bad, tensors, future)
    with pytest.raises(SceneMapError, match='landmark map format 3 .*memorize the scene'):
        Relocalizer.from_file(bad, device='cpu')


def test_a_format_1_map_still_localizes(small_scene, tmp_path):
    from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig
    root, mem, query = small_scene
    path = str(tmp_path / 'v1.map')
    memorize(PosedFrameFolder(root).frames(mem), path, MemorizeConfig(
        backbone='handcrafted', device='cpu', head='landmark_detector', landmarks=80,
        landmark_format=1, landmark_iterations=150, augmentations=1,
        max_keypoints=1024), progress=False)
    manifest, tensors = load_scene_map(path)
    old = str(tmp_path / 'old.map')
    save_scene_map(old, *_as_format_1(tensors, manifest))
    reloc = Relocalizer.from_file(old, device='cpu')
    assert reloc.scene_model.head.cfg.version == 1
    assert 'landmarks.observations' not in tensors and 'landmarks.desc' in tensors
    assert reloc.scene_model.observations.shape[1] == 1      # its one descriptor
    res = [reloc.localize(f.load_color(), f.K) for f in PosedFrameFolder(root).frames(query)]
    assert all(r.reason != 'bad_input' for r in res)
    assert sum(r.success for r in res) >= 1


def test_heat_at_keypoint_cells_equals_the_full_heatmaps(sld_scene):
    """Format 2 heads run only on the cells that hold keypoints: same values as the grid."""
    root, query, path, _ = sld_scene
    reloc = Relocalizer.from_file(path, device='cpu')
    frame = PosedFrameFolder(root).frames(query)[0]
    feats = reloc.features(frame.load_color())
    model = reloc.scene_model
    with torch.no_grad():
        heat = model._keypoint_heat(feats, reloc.config)
        full = model.head.probabilities(feats.grid_desc.permute(2, 0, 1)[None].float())[0]
    kp = feats.keypoints
    cx, cy = ((kp + 0.5) / 8).long().unbind(1)
    assert heat.shape == (len(kp), model.points_xyz.shape[0])
    torch.testing.assert_close(heat, full[:, cy, cx].T, atol=1e-5, rtol=1e-4)


def test_one_keypoint_per_landmark_keeps_the_best_match():
    from scene_reloc.scene_models.landmark_detector import LandmarkDetectorModel
    landmark = torch.tensor([3, 1, 3, 3, 0, 1])
    score = torch.tensor([0.8, 0.9, 0.95, 0.99, 0.7, 0.9])
    keep = torch.tensor([True, True, True, False, True, True])
    best = LandmarkDetectorModel._best_per_landmark(landmark, score, keep)
    # Landmark 3: keypoint 3 scores highest but was not kept, so keypoint 2; landmark 1: a
    # tie between 1 and 5, the first wins; landmark 0: its only keypoint.
    assert best.tolist() == [False, True, True, False, True, False]

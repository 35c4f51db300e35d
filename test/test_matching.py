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

"""The cross-view keypoint matching loss of pretraining: correspondences, pairs, training."""

import subprocess
import sys

from ddp_worker import planar_scene
import numpy as np
import pytest
import torch

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc_training.cli.pretrain import checkpoint_config, PretrainConfig
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
from scene_reloc_training.learn.matching import (
    matching_losses,
    overlap_partners,
    pixel_correspondences,
)
from scene_reloc_training.learn.preserve import top_points
from scene_reloc_training.learn.pretrain_backbone import (
    augmented_samples,
    sample_plan,
    train_whole_network,
)
from scene_reloc_training.memorize.scene_coordinates import scene_coordinate_image


def test_correspondences_follow_the_cameras_in_a_rendered_room(tmp_path):
    write_synthetic_scene(str(tmp_path), seed=3, num_memorize=30, num_query=0, width=160,
                          height=120, trajectory_frames=300)   # frames 0 and 10 overlap
    folder = PosedFrameFolder(str(tmp_path))
    frames = folder.frames(folder.stems())[:2]
    coords = [scene_coordinate_image(f.load_depth(), f.K, f.load_pose(), 0) for f in frames]
    rng = np.random.default_rng(0)
    kp = rng.uniform([0, 0], [159, 119], (400, 2))
    pos, found = pixel_correspondences(kp, coords[0], coords[1])
    # where the pinhole model puts the same surface points in the second camera
    u, v = np.round(kp).astype(int).T
    world = coords[0][v, u]
    cam = (world - frames[1].load_pose()[:3, 3]) @ frames[1].load_pose()[:3, :3]
    proj = cam[:, :2] / cam[:, 2:] * np.diag(frames[1].K)[:2] + frames[1].K[:2, 2]
    assert found.sum() > 150
    assert (cam[found, 2] > 0).all()                       # nothing found off-image
    assert (proj[found] > -3).all() and (proj[found] < [162, 122]).all()
    err = np.linalg.norm(pos[found] - proj[found], axis=1)
    assert np.median(err) < 1.0 and np.percentile(err, 95) < 2.5, np.percentile(err, [50, 95])


def test_unseen_surface_has_no_correspondence_and_the_rest_is_exact():
    scene = planar_scene(16, frames=2, shift=6)
    kp = np.array([[2.0, 10.0], [3.0, 30.0], [6.0, 20.0], [40.0, 50.0], [95.0, 63.0]])
    pos, found = pixel_correspondences(kp, scene.coords[1], scene.coords[0])
    # frame 1 is frame 0 moved 6 px left: its pixel x is x + 6 in frame 0, inside up to x = 89
    assert found.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(pos[found], kp[found] + [6, 0])
    _, found = pixel_correspondences(kp, scene.coords[0], scene.coords[1])
    assert found.tolist() == [False, False, True, True, True]   # x < 6 (+ tau) not in frame 1
    # keypoints outside the image (where the backbone pads a frame to multiples of 32): none
    _, found = pixel_correspondences(np.array([[40.0, 64.0], [96.0, 10.0], [40.0, 63.0]]),
                                     scene.coords[1], scene.coords[0])
    assert found.tolist() == [False, False, True]


def test_correspondences_stay_exact_far_from_the_origin():
    scene = planar_scene(16, frames=2, shift=6)
    far = [c + np.float32(120.0) for c in scene.coords]      # a map frame 120 m away
    kp = np.array([[10.0, 10.0], [40.0, 50.0], [70.0, 33.0]])
    pos, found = pixel_correspondences(kp, far[1], far[0])
    assert found.all()
    np.testing.assert_array_equal(pos, kp + [6, 0])
    assert [p.tolist() for p in overlap_partners(far)] == [[1], [0]]


def test_views_without_depth_take_no_part():
    net = AlikeNet(*ALIKE_CONFIGS['alike-t']).eval()
    scene = planar_scene(net.dim, frames=2)
    with torch.no_grad():
        x = torch.from_numpy(np.stack(scene.images)).permute(0, 3, 1, 2).float() / 255
        levels, _, padded = net(x)
        pts = top_points(net.padded_score_map(levels, padded), 64)
        both = matching_losses(net, levels, padded, pts, scene.coords, [(0, 1)])
        one = matching_losses(net, levels, padded, pts, [scene.coords[0], None], [(0, 1)])
    assert (both > 0).all() and not one.any()
    scene.lifted = [True, False]      # e.g. triangulated coordinates: not used for matching
    batch = augmented_samples(scene, [0, 1], [np.random.default_rng(i) for i in (0, 1)], 'cpu')
    assert batch['xyz'][0] is not None and batch['xyz'][1] is None


def test_partners_are_the_frames_that_see_the_same_surface():
    a = planar_scene(16, frames=3, shift=30)
    far = planar_scene(16, frames=1, z=5.0)          # another plane, 4 m away
    partners = overlap_partners(a.coords + far.coords)
    assert [p.tolist() for p in partners] == [[1, 2], [0, 2], [0, 1], [3]]
    partners = overlap_partners(a.coords, min_overlap=0.6)   # 36 of 96 columns shared
    assert [p.tolist() for p in partners] == [[1], [0, 2], [1]]


def test_pairs_in_the_sample_plan_are_overlapping_frames():
    scene = planar_scene(16, frames=4)
    scene.partners = [np.array([3]), np.array([2]), np.array([1]), np.array([0])]
    for it in range(5):
        _, idx, aug = sample_plan(0, it, [scene], 6, pairs=True)
        assert len(idx) == len(aug) == 6
        assert all(idx[i] + idx[i + 1] == 3 for i in range(0, 6, 2))


def _loss(net, scene, frames=(0, 1)):
    x = torch.from_numpy(np.stack([scene.images[i] for i in frames])).permute(0, 3, 1, 2)
    x = x.float() / 255
    with torch.no_grad():
        levels, _, padded = net(x)
        pts = top_points(net.padded_score_map(levels, padded), 64)
        return matching_losses(net, levels, padded, pts, [scene.coords[i] for i in frames],
                               [(0, 1)])


def test_matching_loss_is_what_training_on_it_lowers():
    torch.manual_seed(0)
    start = AlikeNet(*ALIKE_CONFIGS['alike-t']).eval()
    held = planar_scene(start.dim, frames=2, shift=9, seed=7)   # not trained on
    before = _loss(start, held)
    assert before.shape == (2,) and (before > 0).all()

    def trained(weight):
        torch.manual_seed(0)
        net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
        net, _, history = train_whole_network(net, [planar_scene(net.dim, frames=6, seed=1)],
                                              40, batch_size=2, lr_backbone=3e-3,
                                              progress=False, every=20, matching_weight=weight)
        logged = [r['match_loss'] for r in history if 'match_loss' in r]
        assert len(logged) == (2 if weight else 0)   # the history says the loss ran
        assert all(v > 0 for v in logged)
        return _loss(net, held).mean()
    with_loss, without = trained(1.0), trained(0.0)
    assert with_loss < 0.7 * before.mean() and with_loss < without, (before, with_loss, without)


def test_the_matching_loss_needs_pairs_and_partners():
    net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
    scene = planar_scene(net.dim)
    with pytest.raises(ValueError, match='pairs'):
        train_whole_network(net, [scene], 2, batch_size=3, progress=False, matching_weight=1)
    scene.partners = None
    with pytest.raises(ValueError, match='partners'):
        train_whole_network(net, [scene], 2, batch_size=2, progress=False, matching_weight=1)


def test_the_cli_refuses_a_negative_weight_and_old_checkpoints_still_resume(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'scene_reloc_training.cli', 'pretrain', '--corpus',
                        str(tmp_path / 'corpus.json'), '--out', str(tmp_path / 'out'),
                        '--matching-weight', '-1'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and '--matching-weight must be 0 (off) or more' in r.stderr
    # a checkpoint's settings name the matching loss only when it is on: runs from before the
    # option (which did not have it) resume
    assert 'matching_weight' not in checkpoint_config(PretrainConfig())
    assert checkpoint_config(PretrainConfig(matching_weight=0.5))['matching_weight'] == 0.5

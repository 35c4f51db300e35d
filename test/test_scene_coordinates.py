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

import numpy as np

from scene_reloc.geometry import look_at
from scene_reloc_training.memorize.augment import augment_view
from scene_reloc_training.memorize.scene_coordinates import (
    depth_edge_mask,
    register_depth,
    scene_coordinate_image,
)

K = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])


def step_depth():
    d = np.full((60, 80), 3.0, np.float32)
    d[:, :40] = 1.0  # a foreground object on the left half
    return d


def test_edge_mask_drops_the_discontinuity_only():
    m = depth_edge_mask(step_depth(), margin=3)
    assert not m[:, 37:43].any()
    assert m[10:50, 5:30].all() and m[10:50, 50:75].all()
    assert depth_edge_mask(step_depth(), margin=0).all()


def test_register_depth_shifts_by_the_baseline_disparity():
    d = step_depth()
    assert register_depth(d, K, (0, 0, 0)) is d
    shifted = register_depth(d, K, (0.03, 0, 0))
    # Disparity f * b / z: 3 px at 1 m, 1 px at 3 m; the edge moves right by 3 px.
    row = shifted[30]
    assert np.all(row[5:42] == 1.0) and row[44] == 3.0


def test_scene_coordinates_and_augmented_labels_stay_aligned():
    T = look_at([0, 0, 0], [0, 0, 1], up=(0, -1, 0))
    xyz = scene_coordinate_image(np.full((60, 80), 2.0, np.float32), K, T, edge_margin=0)
    assert np.allclose(np.linalg.norm(xyz[30, 40] - T[:3, 3]), 2.0, atol=0.01)
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[20:30, 30:40] = 255  # a bright square
    img, warped = augment_view(np.random.default_rng(0), rgb, xyz)
    bright = img.mean(2) > img.mean() + 40
    centre_xyz = xyz[20:30, 30:40].reshape(-1, 3).mean(0)
    vals = warped[bright]
    vals = vals[np.isfinite(vals).all(1)]
    assert len(vals) > 20
    assert np.linalg.norm(vals.mean(0) - centre_xyz) < 0.05


def test_augmented_labels_at_points_equal_the_warped_image_there():
    """The buffer looks labels up at the grid centres only: the same as warping the image."""
    from scene_reloc.backbones import grid_centres
    from scene_reloc_training.memorize.feature_buffer import sample_coords
    rng = np.random.default_rng(1)
    xyz = rng.random((96, 128, 3)).astype(np.float32)     # every pixel a different label
    rgb = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    at = grid_centres(96, 128).numpy().reshape(-1, 2)
    same = total = 0
    for seed in range(10):
        img_a, full = augment_view(np.random.default_rng(seed), rgb, xyz)
        img_b, some = augment_view(np.random.default_rng(seed), rgb, xyz, at=at)
        assert np.array_equal(img_a, img_b)                # the same view
        want = sample_coords(full, at)
        assert np.array_equal(np.isnan(want).any(1), np.isnan(some).any(1))
        ok = np.isfinite(want).all(1)
        same += int((want[ok] == some[ok]).all(1).sum())
        total += int(ok.sum())
    assert total > 1000 and same / total > 0.995       # nearest-pixel ties may round apart


def test_photometric_noise_is_seeded_and_has_its_strength():
    from scene_reloc_training.memorize.augment import photometric
    flat = np.full((120, 160, 3), 128, np.uint8)
    a = photometric(np.random.default_rng(3), flat)
    b = photometric(np.random.default_rng(3), flat)
    c = photometric(np.random.default_rng(4), flat)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Sensor noise of sigma up to 4 grey levels around each channel's (re-lit) level.
    stds = []
    for seed in range(8):
        img = photometric(np.random.default_rng(seed), flat).astype(np.float32)
        stds.append(float((img - img.mean((0, 1))).std()))
    assert max(stds) > 1.0 and max(stds) < 4.6

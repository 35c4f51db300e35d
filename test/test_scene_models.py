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

"""Scene models behind one interface, found by the manifest's head type."""

import numpy as np
import pytest
import torch

from scene_reloc.geometry import invert_pose, look_at, pose_error, project, transform_points
from scene_reloc.relocalizer import Relocalizer
import scene_reloc.scene_models as scene_models
from scene_reloc.scene_models import (
    available_scene_models,
    build_scene_model,
    scene_model_class,
    SceneModel,
)

# A scene model written as a user would add one: one file in the package, nothing else edited.
# It "detects" the map's points by projecting them with the pose stored in its manifest, so the
# pipeline around it must recover exactly that pose.
ORACLE = """
import numpy as np
from scene_reloc.geometry import invert_pose, project, transform_points
from scene_reloc.scene_models.base import Correspondences, FEATURES_GRID, SceneModel


class Oracle(SceneModel):
    head_type = 'oracle_test'
    required_tensors = ('oracle.xyz',)

    def __init__(self, manifest, tensors, device):
        super().__init__(manifest, tensors, device)
        self.xyz = tensors['oracle.xyz'].astype(np.float64)
        self.cam_from_world = invert_pose(np.array(manifest['head']['world_from_cam']))
        self.K = np.array(manifest['head']['K'])
        self.calls = []

    def features_needed(self, config):
        return FEATURES_GRID

    def correspondences(self, features, image_hw, config, frames=None):
        self.calls.append((tuple(features.grid_desc.shape), tuple(features.keypoints.shape)))
        uv, z = project(transform_points(self.cam_from_world, self.xyz), self.K)
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < image_hw[1]) & (uv[:, 1] >= 0) & \\
            (uv[:, 1] < image_hw[0])
        return Correspondences(uv[ok], self.xyz[ok], np.ones(int(ok.sum())))

    def map_points(self):
        return self.xyz


SCENE_MODEL = Oracle
"""


@pytest.fixture
def oracle_package(tmp_path, monkeypatch):
    (tmp_path / 'oracle_test.py').write_text(ORACLE)
    monkeypatch.setattr(scene_models, '__path__', list(scene_models.__path__) + [str(tmp_path)])
    yield
    import sys
    sys.modules.pop('scene_reloc.scene_models.oracle_test', None)


def test_both_scene_models_are_registered_by_head_type():
    assert {'region_classifier', 'landmark_detector'} <= set(available_scene_models())
    for name in ('region_classifier', 'landmark_detector'):
        cls = scene_model_class(name)
        assert issubclass(cls, SceneModel) and cls.head_type == name and cls.required_tensors


@pytest.mark.parametrize('name', ['base', 'os', '../evil', 'scene_reloc.relocalizer', ''])
def test_unknown_head_types_are_refused_before_any_import(name):
    with pytest.raises(ValueError, match='unknown head type'):
        scene_model_class(name)


def test_a_new_scene_model_is_one_file_and_the_pipeline_does_not_branch(oracle_package):
    assert 'oracle_test' in available_scene_models()
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    world_from_cam = look_at([0.2, -0.1, 1.0], [2.0, 0.3, 1.1])
    rng = np.random.default_rng(0)
    xyz = transform_points(world_from_cam, np.column_stack([
        rng.uniform(-1, 1, 200), rng.uniform(-0.7, 0.7, 200), rng.uniform(2, 4, 200)]))
    manifest = {'head_type': 'oracle_test', 'backbone': {'name': 'handcrafted'},
                'head': {'world_from_cam': world_from_cam.tolist(), 'K': K.tolist()}}
    reloc = Relocalizer(manifest, {'oracle.xyz': xyz.astype(np.float32)}, device='cpu')
    assert reloc.head_type == 'oracle_test'
    res = reloc.localize(np.zeros((240, 320, 3), np.uint8), K)
    assert res.success, res.detail
    t, r = pose_error(res.world_from_cam, world_from_cam)
    assert t < 1e-3 and r < 0.05
    # It was handed the grid only (it asked for no keypoints), at the 1/8 resolution.
    (grid_shape, kp_shape), = reloc.scene_model.calls
    assert grid_shape[:2] == (30, 40) and kp_shape == (0, 2)
    uv, _ = project(transform_points(invert_pose(world_from_cam), xyz), K)
    assert res.num_correspondences == int(((uv >= 0) & (uv < [320, 240])).all(1).sum())


def test_region_model_correspondences_agree_with_the_true_pose(small_scene, small_map):
    from scene_reloc.posed_frames import PosedFrameFolder
    from scene_reloc.scene_map import load_scene_map
    root, mem, _ = small_scene
    manifest, tensors = load_scene_map(small_map[0])
    reloc = Relocalizer(manifest, tensors, device='cpu')
    model = build_scene_model(manifest, tensors, 'cpu')
    assert type(model) is type(reloc.scene_model) and model.map_points().shape[1] == 3
    frame = PosedFrameFolder(root).frames(mem[:1])[0]
    img = frame.load_color()
    corr = model.correspondences(reloc.features(img), img.shape[:2], reloc.config)
    assert len(corr) >= 30 and corr.weights is None
    uv, _ = project(transform_points(invert_pose(frame.load_pose()), corr.points3d), frame.K)
    err = np.linalg.norm(uv - corr.points2d, axis=1)
    assert np.mean(err < 3) > 0.3     # well above chance: the pose is found by RANSAC from these


def test_in_leaf_similarities_are_every_keypoint_against_every_point_of_its_leaves(small_map):
    """The chunked leaf search equals the plain products with the map's int8 descriptors."""
    from scene_reloc.scene_map import load_scene_map
    manifest, tensors = load_scene_map(small_map[0])
    model = build_scene_model(manifest, tensors, 'cpu')
    g = torch.Generator().manual_seed(0)
    n_leaves = model.leaf_counts.shape[0]
    desc = torch.nn.functional.normalize(torch.randn(600, model.leaf_desc.shape[-1], generator=g),
                                         dim=1)
    leaf = torch.randint(0, n_leaves, (600, 3), generator=g)
    sim = model._leaf_similarities(desc, leaf, chunk=128)        # 600 = 4 chunks and a part
    points = torch.from_numpy(tensors['points.desc']).float() / 127.0
    offsets = tensors['points.leaf_offsets']
    for n, t in [(0, 0), (5, 2), (130, 1), (599, 2)]:
        lo, hi = offsets[leaf[n, t]], offsets[leaf[n, t] + 1]
        want = points[lo:hi] @ desc[n]
        torch.testing.assert_close(sim[n, t, :hi - lo], want, atol=1e-5, rtol=0)
        assert torch.all(sim[n, t, hi - lo:] == 0)                 # padding: no map point


def test_top_landmarks_per_cell_by_threshold_equal_topk_where_they_count():
    """Thresholded top-k: topk's values and columns wherever they reach the minimum."""
    from scene_reloc.scene_models.landmark_detector import _top_per_row
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 401, generator=g) * torch.rand(300, 1, generator=g) * 8
    heat = torch.softmax(logits, dim=1)[:, :-1]             # as the heads give it: no 'none'
    heat[7] = 0                                             # a cell where nothing is seen
    for top, m in [(16, 0.1), (3, 0.1), (16, 0.01), (16, 0.0)]:
        vals, cols = _top_per_row(heat, top, m)
        want_v, want_c = heat.topk(top, dim=1)
        k = vals.shape[1]
        assert k <= top and (m > 0 or k == top)
        counted = want_v[:, :k] >= m
        assert torch.equal(vals[:, :k][counted], want_v[:, :k][counted])
        assert torch.equal(cols[:, :k][counted], want_c[:, :k][counted])
        assert not torch.any((vals > 0) & (vals < m))       # nothing below the minimum kept
        assert torch.all((want_v[:, k:] < m) | (k == top))  # nothing that counts was cut
    vals, cols = _top_per_row(torch.zeros(4, 10), 16, 0.1)
    assert vals.shape == (4, 0) and cols.shape == (4, 0)

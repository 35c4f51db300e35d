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
import pytest

from scene_reloc.partition import HierarchicalPartition, kmeans


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-5, 5, (6, 3))
    pts = np.concatenate([c + 0.05 * rng.normal(size=(100, 3)) for c in centres])
    found, assign = kmeans(pts, 6, seed=1)
    d = np.linalg.norm(found[:, None] - centres[None], axis=-1).min(1)
    assert d.max() < 0.05
    assert len(np.unique(assign)) == 6


def test_tree_labels_are_consistent_with_their_parents():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 4, (20000, 3))
    part = HierarchicalPartition.build(pts, k1=8, k2=8, seed=0)
    leaf, l1 = part.assign(pts)
    assert part.num_leaves == 64 and (leaf >= 0).all()
    assert np.array_equal(leaf // 8, l1)
    nearest_region = np.linalg.norm(pts[:, None] - part.centres_l1[None], axis=-1).argmin(1)
    assert np.array_equal(l1, nearest_region)
    # Each leaf's points lie around its centre: quantisation error well below region size.
    err = np.linalg.norm(pts - part.leaf_centres[leaf], axis=1)
    assert np.median(err) < 0.5
    assert len(np.unique(leaf)) == 64
    # Exactly the nearest leaf centre of the point's region (brute force over its k2 leaves).
    leaves = np.nan_to_num(part.leaf_centres.reshape(8, 8, 3), nan=np.inf)
    d = np.linalg.norm(pts[:, None] - leaves[l1], axis=-1)
    assert np.array_equal(leaf % 8, d.argmin(1))


def test_small_regions_and_invalid_points():
    pts = np.concatenate([np.zeros((5, 3)), np.ones((200, 3)) + np.random.default_rng(0)
                          .normal(size=(200, 3))])
    part = HierarchicalPartition.build(pts, k1=2, k2=16)
    leaf, _ = part.assign(np.array([[np.nan, 0, 0], [0, 0, 0]]))
    assert leaf[0] == -1 and leaf[1] >= 0
    assert np.isfinite(part.leaf_centres[leaf[1]]).all()
    with pytest.raises(ValueError, match='cannot be split'):
        HierarchicalPartition.build(np.zeros((3, 3)), k1=8, k2=8)

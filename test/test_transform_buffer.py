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

"""The node's transform buffer: interpolation, static edges, chains, and clear errors."""

import numpy as np
import pytest

from scene_reloc.geometry import invert_pose, rotvec_to_matrix
from scene_reloc.transform_buffer import ConnectivityError, ExtrapolationError, TransformBuffer

S = 1_000_000_000


def pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = rotvec_to_matrix(np.asarray(rotvec, float))
    T[:3, 3] = t
    return T


def test_interpolates_translation_linearly_and_rotation_by_slerp():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base', 1 * S, pose([0, 0, 0], [0, 0, 0]))
    buf.set_transform('odom', 'base', 2 * S, pose([0, 0, 0.8], [2, 0, 0]))
    T = buf.lookup('odom', 'base', int(1.25 * S))
    np.testing.assert_allclose(T[:3, 3], [0.5, 0, 0], atol=1e-12)
    # Slerp: a quarter of the way is a quarter of the angle about the same axis.
    np.testing.assert_allclose(T[:3, :3], rotvec_to_matrix([0, 0, 0.2]), atol=1e-9)
    np.testing.assert_allclose(buf.lookup('odom', 'base', 2 * S), pose([0, 0, 0.8], [2, 0, 0]))


def test_chain_lookup_composes_through_the_common_ancestor():
    buf = TransformBuffer()
    map_odom = pose([0, 0, 0.3], [1, 2, 0])
    odom_base = pose([0, 0, -0.1], [0.5, 0, 0])
    base_cam = pose([-np.pi / 2, 0, -np.pi / 2], [0.1, 0, 0.3])
    buf.set_transform('map', 'odom', 5 * S, map_odom)
    buf.set_transform('map', 'odom', 6 * S, map_odom)
    buf.set_transform('odom', 'base', 5 * S, odom_base)
    buf.set_transform('odom', 'base', 6 * S, odom_base)
    buf.set_transform('base', 'camera', 0, base_cam, static=True)
    want = map_odom @ odom_base @ base_cam
    np.testing.assert_allclose(buf.lookup('map', 'camera', int(5.5 * S)), want, atol=1e-12)
    np.testing.assert_allclose(buf.lookup('camera', 'map', int(5.5 * S)), invert_pose(want),
                               atol=1e-12)
    # Between two leaves of the tree: odom -> camera and camera -> odom.
    np.testing.assert_allclose(buf.lookup('odom', 'camera', 5 * S), odom_base @ base_cam,
                               atol=1e-12)
    # A static edge holds at any time, including long after the dynamic ones.
    np.testing.assert_allclose(buf.lookup('base', 'camera', 999 * S), base_cam)


def test_latest_common_time_when_stamp_is_zero():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base', 1 * S, pose([0, 0, 0], [1, 0, 0]))
    buf.set_transform('odom', 'base', 3 * S, pose([0, 0, 0], [3, 0, 0]))
    buf.set_transform('base', 'camera', 1 * S, pose([0, 0, 0], [0, 0, 0]))
    buf.set_transform('base', 'camera', 2 * S, pose([0, 0, 0], [0, 1, 0]))
    # The newest time both edges have is 2 s: odom->base interpolates to x = 2 there.
    np.testing.assert_allclose(buf.lookup('odom', 'camera')[:3, 3], [2, 1, 0])


def test_extrapolation_and_unknown_frames_raise_with_a_reason():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base', 10 * S, np.eye(4))
    buf.set_transform('odom', 'base', 11 * S, np.eye(4))
    with pytest.raises(ExtrapolationError, match='after the newest'):
        buf.lookup('odom', 'base', 12 * S)
    with pytest.raises(ExtrapolationError, match='before the oldest'):
        buf.lookup('odom', 'base', 9 * S)
    with pytest.raises(ConnectivityError, match='known frames'):
        buf.lookup('map', 'base', 10 * S)
    assert not buf.can_transform('map', 'base')
    assert buf.can_transform('base', 'odom', 10 * S)
    with pytest.raises(ValueError):
        buf.set_transform('a', 'a', 0, np.eye(4))
    with pytest.raises(ValueError):
        buf.set_transform('a', 'b', 0, np.full((4, 4), np.nan))


def test_old_samples_fall_out_of_the_cache_window():
    buf = TransformBuffer(cache_seconds=2.0)
    for i in range(10):
        buf.set_transform('odom', 'base', i * S, pose([0, 0, 0], [i, 0, 0]))
    np.testing.assert_allclose(buf.lookup('odom', 'base', 8 * S)[:3, 3], [8, 0, 0])
    with pytest.raises(ExtrapolationError):
        buf.lookup('odom', 'base', 5 * S)
    # Out-of-order arrival lands in time order.
    buf.set_transform('odom', 'base', int(8.5 * S), pose([0, 0, 0], [100, 0, 0]))
    assert buf.lookup('odom', 'base', int(8.5 * S))[0, 3] == 100


def test_leading_slashes_are_the_same_frame():
    buf = TransformBuffer()
    buf.set_transform('/map', '/odom', 0, pose([0, 0, 0], [1, 0, 0]), static=True)
    np.testing.assert_allclose(buf.lookup('map', 'odom')[0, 3], 1.0)
    assert buf.frames() == ['map', 'odom']

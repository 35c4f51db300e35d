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

from scene_reloc.geometry import (
    backproject,
    invert_pose,
    look_at,
    matrix_to_rotvec,
    nearest_rotation,
    pose_error,
    project,
    quaternion_xyzw_to_rotation,
    rotation_to_quaternion_xyzw,
    rotvec_to_matrix,
    transform_points,
)


def random_pose(rng):
    T = np.eye(4)
    T[:3, :3] = rotvec_to_matrix(rng.normal(size=3))
    T[:3, 3] = rng.normal(size=3)
    return T


def test_quaternion_round_trip_in_ros_order():
    rng = np.random.default_rng(0)
    for _ in range(50):
        R = random_pose(rng)[:3, :3]
        q = rotation_to_quaternion_xyzw(R)
        assert q[3] >= 0 and np.isclose(np.linalg.norm(q), 1)
        assert np.allclose(quaternion_xyzw_to_rotation(q), R, atol=1e-9)
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    Rz = rotvec_to_matrix([0, 0, np.pi / 2])
    assert np.allclose(rotation_to_quaternion_xyzw(Rz), [0, 0, np.sqrt(0.5), np.sqrt(0.5)])


def test_invert_and_transform():
    rng = np.random.default_rng(1)
    T = random_pose(rng)
    p = rng.normal(size=(10, 3))
    assert np.allclose(transform_points(invert_pose(T), transform_points(T, p)), p)


def test_backproject_project_round_trip():
    K = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
    rng = np.random.default_rng(2)
    px = rng.uniform(0, 640, (20, 2))
    d = rng.uniform(0.5, 4, 20)
    uv, z = project(backproject(px, d, K), K)
    assert np.allclose(uv, px) and np.allclose(z, d)


def test_pose_error_measures_centre_distance_and_angle():
    A = look_at([0, 0, 1], [1, 0, 1])
    B = A.copy()
    B[:3, 3] += [0.03, 0.04, 0]
    B[:3, :3] = B[:3, :3] @ rotvec_to_matrix([0, np.radians(7), 0])
    t, r = pose_error(B, A)
    assert np.isclose(t, 0.05) and np.isclose(r, 7)


def test_rotation_error_ignores_a_ground_truth_that_is_not_orthonormal():
    # 7-Scenes pose files: rotations with singular values ~0.9998. A known 0.5 deg error must
    # read as 0.5 deg, not ~1.1 deg as arccos((trace(R_est^T R_true) - 1) / 2) makes of it.
    rng = np.random.default_rng(3)
    for _ in range(20):
        true = random_pose(rng)
        axis = rng.normal(size=3)
        est = true.copy()
        est[:3, :3] = true[:3, :3] @ rotvec_to_matrix(axis / np.linalg.norm(axis) *
                                                       np.radians(0.5))
        scaled = true.copy()
        scaled[:3, :3] *= 0.9998
        naive = np.degrees(np.arccos(np.clip(
            (np.trace(est[:3, :3].T @ scaled[:3, :3]) - 1) / 2, -1, 1)))
        assert naive > 0.9                       # the artefact the old metric had
        assert np.isclose(pose_error(est, scaled)[1], 0.5, atol=1e-6)
        assert np.isclose(pose_error(scaled, scaled)[1], 0.0, atol=1e-6)


def test_nearest_rotation_and_log_map():
    rng = np.random.default_rng(4)
    for _ in range(20):
        R = random_pose(rng)[:3, :3]
        noisy = R * 0.9997 + rng.normal(scale=1e-4, size=(3, 3))
        P = nearest_rotation(noisy)
        assert np.allclose(P.T @ P, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(P), 1)
        assert np.abs(P - R).max() < 1e-3
        v = rng.normal(size=3)
        v *= rng.uniform(0, np.pi) / np.linalg.norm(v)
        assert np.allclose(matrix_to_rotvec(rotvec_to_matrix(v)), v, atol=1e-9)
    # A reflection is not a rotation: its nearest rotation has det +1.
    assert np.isclose(np.linalg.det(nearest_rotation(np.diag([1.0, 1.0, -1.0]))), 1)
    # Small angles keep their digits (arccos of the trace would give ~1e-8 rad of noise).
    tiny = rotvec_to_matrix([1e-9, 0, 0])
    assert np.isclose(matrix_to_rotvec(tiny)[0], 1e-9, rtol=1e-6)
    # 180 degrees: the axis is recovered up to sign.
    half = matrix_to_rotvec(rotvec_to_matrix([0, np.pi, 0]))
    assert np.allclose(np.abs(half), [0, np.pi, 0], atol=1e-6)


def test_look_at_points_the_optical_axis_at_the_target():
    T = look_at([1, 2, 1.5], [4, 2, 1.5])
    uv, z = project(transform_points(invert_pose(T), np.array([[4.0, 2, 1.5]])), np.eye(3))
    assert np.allclose(uv, 0) and z[0] > 0
    assert np.isclose(np.linalg.det(T[:3, :3]), 1)

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

"""
Rigid transforms, projections and pose errors.

Poses are named by direction: ``world_from_cam`` maps camera coordinates to world coordinates
(x_world = R @ x_cam + t). Quaternions are stated once, in ROS order (x, y, z, w).
"""

import numpy as np


def invert_pose(a_from_b):
    """
    Invert a 4x4 rigid transform.

    :param a_from_b: (4, 4) array.
    :return: (4, 4) ``b_from_a``.
    """
    R = a_from_b[:3, :3]
    t = a_from_b[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def transform_points(a_from_b, points_b):
    """Apply a 4x4 transform to (N, 3) points."""
    return points_b @ a_from_b[:3, :3].T + a_from_b[:3, 3]


def pixel_grid(height, width, stride=1, offset=0.0):
    """
    Pixel centre coordinates of a regular grid.

    :return: (H', W', 2) float64 array of (x, y) with x = offset + stride * column.
    """
    ys = offset + stride * np.arange(height)
    xs = offset + stride * np.arange(width)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], axis=-1)


def backproject(pixels_xy, depth_m, K):
    """
    Lift pixels with metric depth into camera coordinates.

    :param pixels_xy: (..., 2) pixel coordinates (pixel centres at integers, as OpenCV).
    :param depth_m: (...) depth along the optical axis in metres.
    :param K: (3, 3) intrinsics.
    :return: (..., 3) points in the camera frame.
    """
    x = (pixels_xy[..., 0] - K[0, 2]) / K[0, 0]
    y = (pixels_xy[..., 1] - K[1, 2]) / K[1, 1]
    return np.stack([x * depth_m, y * depth_m, depth_m], axis=-1)


def project(points_cam, K):
    """
    Project camera-frame points to pixels.

    :return: ((N, 2) pixels, (N,) depth). Points behind the camera get NaN pixels.
    """
    z = points_cam[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        u = K[0, 0] * points_cam[:, 0] / z + K[0, 2]
        v = K[1, 1] * points_cam[:, 1] / z + K[1, 2]
    uv = np.stack([u, v], axis=-1)
    uv[z <= 1e-6] = np.nan
    return uv, z


def rotation_to_quaternion_xyzw(R):
    """Convert a rotation matrix to a unit quaternion in ROS order (x, y, z, w), w >= 0."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def quaternion_xyzw_to_rotation(q):
    """Convert a quaternion in ROS order (x, y, z, w) to a rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotvec_to_matrix(rotvec):
    """Rodrigues' formula: axis-angle vector (radians) to a rotation matrix."""
    theta = float(np.linalg.norm(rotvec))
    if theta < 1e-12:
        return np.eye(3)
    k = np.asarray(rotvec, dtype=np.float64) / theta
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * Kx + (1 - np.cos(theta)) * Kx @ Kx


def nearest_rotation(M):
    """
    Return the rotation closest to a 3x3 matrix (Frobenius norm): SVD, with det +1.

    Pose files of real datasets hold rotations that are not exactly orthonormal (7-Scenes:
    singular values ~0.9998); every angle is measured between projected rotations.
    """
    U, _, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def matrix_to_rotvec(R):
    """
    Logarithm of a rotation matrix: the axis-angle vector (radians), angle in [0, pi].

    The angle comes from atan2(sin, cos), which stays accurate near 0 where arccos of the
    trace loses half the digits.
    """
    R = np.asarray(R, dtype=np.float64)
    w = 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    s = np.linalg.norm(w)
    c = (np.trace(R) - 1.0) / 2.0
    theta = np.arctan2(s, c)
    if theta < 1e-12:
        return np.zeros(3)
    if theta < np.pi - 1e-4:
        return w / s * theta
    # Near pi the antisymmetric part vanishes: the axis is the dominant column of R + I.
    B = (R + np.eye(3)) / 2.0
    k = int(np.argmax(np.diag(B)))
    axis = B[:, k] / np.sqrt(max(B[k, k], 1e-300))
    axis /= np.linalg.norm(axis)
    if np.dot(axis, w) < 0:
        axis = -axis
    return axis * theta


def rotation_error_rotvec(world_from_cam_est, world_from_cam_true):
    """
    Signed rotation error in the camera frame: rotvec of ``cam_true_from_cam_est`` (radians).

    Both rotations are first projected onto SO(3). Its norm is the geodesic rotation error;
    its mean over many queries is a constant rotation bias (e.g. a calibration offset).
    """
    R_est = nearest_rotation(world_from_cam_est[:3, :3])
    R_true = nearest_rotation(world_from_cam_true[:3, :3])
    return matrix_to_rotvec(R_true.T @ R_est)


def pose_error(world_from_cam_est, world_from_cam_true):
    """
    Compute the translation (metres) and rotation (degrees) error between two camera poses.

    The translation error is the distance between the camera centres. The rotation error is
    the geodesic angle between the two rotations after projecting each onto SO(3), so a
    ground truth that is not exactly orthonormal does not add an error of its own (a rotation
    scaled by 0.9998 reads as ~1 deg with the plain ``arccos((trace(R^T R') - 1) / 2)``).
    """
    dt = np.linalg.norm(world_from_cam_est[:3, 3] - world_from_cam_true[:3, 3])
    dr = np.linalg.norm(rotation_error_rotvec(world_from_cam_est, world_from_cam_true))
    return float(dt), float(np.degrees(dr))


def look_at(eye, target, up=(0.0, 0.0, 1.0)):
    """
    Camera pose looking from ``eye`` at ``target`` (OpenCV camera: x right, y down, z forward).

    :return: (4, 4) world_from_cam.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z], axis=1)
    out[:3, 3] = eye
    return out

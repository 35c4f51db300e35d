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
Messages to core types and back; pure functions, tested by building messages directly.

Works on anything shaped like the messages (rclpy messages, rosbags' dataclasses), so the same
code serves the live node and the offline bag tools.
"""

import cv2
import numpy as np

from scene_reloc.geometry import quaternion_xyzw_to_rotation, rotation_to_quaternion_xyzw


class InputError(ValueError):
    """An image or CameraInfo the node cannot use, and why (reported on /diagnostics)."""


# encoding -> (channels, dtype, cv2 conversion to RGB or None)
_ENCODINGS = {
    'rgb8': (3, np.uint8, None),
    'bgr8': (3, np.uint8, cv2.COLOR_BGR2RGB),
    'rgba8': (4, np.uint8, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, np.uint8, cv2.COLOR_BGRA2RGB),
    'mono8': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    '8uc1': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    '8uc3': (3, np.uint8, cv2.COLOR_BGR2RGB),
}


def stamp_to_ns(stamp):
    """builtin_interfaces/Time -> int nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_to_rgb(msg):
    """
    sensor_msgs/Image -> (H, W, 3) uint8 RGB.

    :raises InputError: unsupported encoding, or a buffer that does not match its header.
    """
    enc = (msg.encoding or '').lower()
    if enc not in _ENCODINGS:
        raise InputError(f'unsupported image encoding {msg.encoding!r}; supported: '
                         f'{", ".join(sorted(_ENCODINGS))}')
    ch, dtype, conv = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * ch * np.dtype(dtype).itemsize
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0 or step < row or data.size < step * (h - 1) + row:
        raise InputError(f'image buffer of {data.size} bytes does not match {w}x{h} {enc} '
                         f'with step {step}')
    arr = np.lib.stride_tricks.as_strided(data, (h, row), (step, 1)).reshape(h, w, ch)
    if conv is None:
        return np.ascontiguousarray(arr)
    return cv2.cvtColor(np.ascontiguousarray(arr), conv)


def compressed_to_rgb(msg):
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB, or :class:`InputError`."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f'cannot decode compressed image (format {msg.format!r}, '
                         f'{data.size} bytes): corrupt or unsupported')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class CameraModel:
    """
    Intrinsics from CameraInfo for images of a given size, with undistortion when needed.

    CameraInfo's K describes ``width x height`` images (after binning/ROI). An image of another
    size is taken as the same view resized, so K is scaled. Distortion models ``plumb_bob`` and
    ``rational_polynomial`` are undistorted (remap to the pinhole K); ``equidistant`` uses the
    fisheye model; any other model with non-zero coefficients is refused.
    """

    SUPPORTED = ('', 'plumb_bob', 'rational_polynomial', 'equidistant')

    def __init__(self, info):
        K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError('CameraInfo has no valid K (focal lengths must be positive): is '
                             'the camera calibrated?')
        self.K = K
        self.width, self.height = int(info.width), int(info.height)
        self.model = info.distortion_model or ''
        self.D = np.asarray(info.d, dtype=np.float64)
        self.distorted = bool(self.D.size and np.any(self.D != 0))
        if self.distorted and self.model not in self.SUPPORTED:
            raise InputError(f'distortion model {self.model!r} is not supported (supported: '
                             'plumb_bob, rational_polynomial, equidistant); rectify the images '
                             'first (image_proc) and subscribe to image_rect')
        self._maps = {}

    def intrinsics_for(self, width, height):
        """K for an image of ``width x height`` (scaled when CameraInfo is for another size)."""
        if self.width <= 0 or self.height <= 0 or (width, height) == (self.width, self.height):
            return self.K
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return K

    def prepare(self, rgb):
        """Return ``(image, K)`` ready for the pinhole core: undistorted when needed."""
        h, w = rgb.shape[:2]
        K = self.intrinsics_for(w, h)
        if not self.distorted:
            return rgb, K
        key = (w, h)
        if key not in self._maps:
            if self.model == 'equidistant':
                self._maps[key] = cv2.fisheye.initUndistortRectifyMap(
                    K, self.D[:4], np.eye(3), K, (w, h), cv2.CV_16SC2)
            else:
                self._maps[key] = cv2.initUndistortRectifyMap(K, self.D, np.eye(3), K, (w, h),
                                                              cv2.CV_16SC2)
        m1, m2 = self._maps[key]
        return cv2.remap(rgb, m1, m2, cv2.INTER_LINEAR), K


def matrix_to_pose(T, pose):
    """Fill a geometry_msgs/Pose from a 4x4 transform; returns ``pose``."""
    q = rotation_to_quaternion_xyzw(T[:3, :3])
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in q)
    return pose


def matrix_to_transform(T, transform):
    """Fill a geometry_msgs/Transform from a 4x4 transform; returns ``transform``."""
    q = rotation_to_quaternion_xyzw(T[:3, :3])
    (transform.translation.x, transform.translation.y,
     transform.translation.z) = (float(v) for v in T[:3, 3])
    (transform.rotation.x, transform.rotation.y, transform.rotation.z,
     transform.rotation.w) = (float(v) for v in q)
    return transform


def transform_to_matrix(transform):
    """geometry_msgs/Transform (or Pose) -> 4x4."""
    t = getattr(transform, 'translation', None) or transform.position
    r = getattr(transform, 'rotation', None) or transform.orientation
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_rotation([r.x, r.y, r.z, r.w])
    T[:3, 3] = [t.x, t.y, t.z]
    return T


def covariance_to_msg(cov6):
    """6x6 (x, y, z, rx, ry, rz) covariance -> the 36 floats of PoseWithCovariance."""
    c = np.asarray(cov6, dtype=np.float64)
    c = 0.5 * (c + c.T)  # exactly symmetric, as EKFs expect
    return [float(v) for v in c.ravel()]

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

import operator
import struct

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
SUPPORTED_ENCODINGS = tuple(sorted(_ENCODINGS))
"""Encodings :func:`image_to_rgb` decodes (compared in lower case)."""

MAX_COMPRESSED_PIXELS = 1 << 26
"""Most pixels (width x height) a compressed image may declare: 67 MP (8K video is 33 MP). It
is read from the JPEG/PNG header before decoding, so a corrupt or hostile header cannot make the
decoder allocate gigabytes."""

# Coefficient counts OpenCV's pinhole undistortion takes (plumb_bob has 5, or 4 without k3;
# rational_polynomial 8).
_OPENCV_DISTORTION_SIZES = (4, 5, 8, 12, 14)
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15
_MAX_CACHED_MAPS = 4


def stamp_to_ns(stamp):
    """builtin_interfaces/Time -> int nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _count(msg, name, what):
    """Return field ``name`` of ``msg`` as a non-negative int, or raise :class:`InputError`."""
    value = getattr(msg, name, None)
    try:
        n = operator.index(value)
    except TypeError:
        raise InputError(f'{what} field {name} is {value!r}, not a whole number') from None
    if n < 0:
        raise InputError(f'{what} field {name} is negative ({n})')
    return n


def _byte_buffer(data, what):
    """View a message's ``data`` (bytes, array('B'), numpy uint8, list of ints) as uint8."""
    if data is None:
        raise InputError(f'{what} has no data')
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        buf = None
    if buf is not None and (not isinstance(data, np.ndarray) or data.dtype == np.uint8):
        return buf
    try:
        arr = np.asarray(data)
        if arr.ndim == 1 and (arr.size == 0 or (np.issubdtype(arr.dtype, np.integer) and
                                                arr.min() >= 0 and arr.max() <= 255)):
            return np.ascontiguousarray(arr, dtype=np.uint8)
    except (TypeError, ValueError, OverflowError):
        pass
    raise InputError(f'{what} data ({type(data).__name__}) is not a sequence of bytes')


def _encoding_hint(enc):
    e = enc.lower()
    if e.startswith('bayer_'):
        return 'debayer it first (image_proc publishes image_color)'
    if e.startswith(('yuv', 'uyvy', 'yuyv', 'nv')):
        return "convert it to rgb8 or bgr8 first (image_proc, or the driver's pixel format)"
    if e.startswith(('mono16', 'rgb16', 'bgr16', 'rgba16', 'bgra16', '16', '32', '64')):
        return 'a 16-bit, float or depth image: subscribe to the 8-bit colour image'
    return 'publish rgb8, bgr8 or mono8, or set image_transport to compressed'


def image_to_rgb(msg):
    """
    sensor_msgs/Image -> (H, W, 3) uint8 RGB.

    Sizes are checked against the data before anything is allocated, so a header that declares
    a huge image with little data is refused, not decoded.

    :raises InputError: an unsupported encoding, or a header that does not match its data
        (empty size, step shorter than a row, fewer bytes than height x step).
    """
    enc_name = getattr(msg, 'encoding', None)
    if not isinstance(enc_name, str):
        raise InputError(f'image encoding is {enc_name!r}, not a string')
    enc = enc_name.lower()
    if enc not in _ENCODINGS:
        raise InputError(f'unsupported image encoding {enc_name!r}; supported: '
                         f'{", ".join(SUPPORTED_ENCODINGS)}: {_encoding_hint(enc_name)}')
    ch, dtype, conv = _ENCODINGS[enc]
    h, w, step = (_count(msg, f, 'image') for f in ('height', 'width', 'step'))
    if h == 0 or w == 0:
        raise InputError(f'image is empty: width {w}, height {h} ({enc_name})')
    row = w * ch * np.dtype(dtype).itemsize
    if step < row:
        raise InputError(f'image step {step} does not match {w}x{h} {enc_name}: a row needs '
                         f'at least {row} bytes')
    data = _byte_buffer(getattr(msg, 'data', None), 'image')
    need = step * (h - 1) + row
    if data.size < need:
        raise InputError(f'image data of {data.size} bytes does not match {w}x{h} {enc_name} '
                         f'with step {step} (needs {need} bytes): truncated, or a wrong header')
    arr = np.lib.stride_tricks.as_strided(data, (h, row), (step, 1)).reshape(h, w, ch)
    if conv is None:
        return np.ascontiguousarray(arr)
    return cv2.cvtColor(np.ascontiguousarray(arr), conv)


def _jpeg_size(b):
    """(width, height) from a JPEG's frame header, or None if it is truncated or corrupt."""
    i, n = 2, len(b)
    while i + 1 < n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in (0xD9, 0xDA) or i + 4 > n:  # image or scan before any frame header
            return None
        else:
            length = b[i + 2] << 8 | b[i + 3]
            if length < 2:
                return None
            if marker in _JPEG_FRAME_MARKERS:
                if i + 9 > n:
                    return None
                return b[i + 7] << 8 | b[i + 8], b[i + 5] << 8 | b[i + 6]
            i += 2 + length
    return None


def _compressed_size(data):
    """Return ('JPEG' | 'PNG' | None, (width, height) or None) read from the header."""
    b = memoryview(data)
    if bytes(b[:8]) == _PNG_SIGNATURE:
        if len(b) < 24 or bytes(b[12:16]) != b'IHDR':
            return 'PNG', None
        return 'PNG', struct.unpack('>II', bytes(b[16:24]))
    if bytes(b[:2]) == b'\xff\xd8':
        return 'JPEG', _jpeg_size(b)
    return None, None


def compressed_to_rgb(msg):
    """
    sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB.

    The kind is read from the data (image_transport's ``format`` strings vary), and the size its
    header declares is checked before the decoder allocates anything.

    :raises InputError: empty, neither JPEG nor PNG, a truncated or corrupt header, a declared
        size of zero or above :data:`MAX_COMPRESSED_PIXELS`, or data the decoder refuses.
    """
    fmt = getattr(msg, 'format', None)
    data = _byte_buffer(getattr(msg, 'data', None), 'compressed image')
    what = f'compressed image (format {fmt!r}, {data.size} bytes)'
    if data.size == 0:
        raise InputError(f'cannot decode {what}: it is empty')
    kind, size = _compressed_size(data)
    if kind is None:
        hint = ('compressedDepth is a depth image, subscribe to the colour one' if 'depth' in
                str(fmt).lower() else 'publish jpeg or png (image_transport compressed)')
        raise InputError(f'cannot decode {what}: the data is neither JPEG nor PNG; {hint}')
    if size is None:
        raise InputError(f'cannot decode {what}: its {kind} header is truncated or corrupt')
    w, h = size
    if w == 0 or h == 0 or w * h > MAX_COMPRESSED_PIXELS:
        why = 'empty' if w * h == 0 else f'more than {MAX_COMPRESSED_PIXELS} pixels'
        raise InputError(f'cannot decode {what}: its {kind} header declares {w}x{h} pixels '
                         f'({why}): corrupt, or not a camera image')
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise InputError(f'cannot decode {what}: the {kind} decoder failed '
                         f'({str(e).strip().splitlines()[-1]})') from e
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f'cannot decode {what}: corrupt or unsupported {kind} data')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _float_array(info, name, size=None):
    value = getattr(info, name, None)
    try:
        a = np.asarray([] if value is None else value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f'CameraInfo {name.upper()} is {value!r}, not numbers') from None
    if size is not None and a.size != size:
        raise InputError(f'CameraInfo {name.upper()} has {a.size} values, not {size}')
    return a


def _usable_k(K):
    return bool(np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0)


class CameraModel:
    """
    Intrinsics from CameraInfo for images of a given size, with undistortion when needed.

    CameraInfo's K is for the ``width x height`` images the camera was calibrated at; ``roi``
    and ``binning_x/y`` say which window of them is published and how reduced (as in
    image_geometry: the principal point moves by the ROI offset, then K is divided by the
    binning). An image of another size with the same aspect ratio is taken as the same view
    resized, so K is scaled; another aspect ratio is refused (the CameraInfo is for other
    images). Distortion models ``plumb_bob`` and ``rational_polynomial`` are undistorted (remap
    to the pinhole K); ``equidistant`` uses the fisheye model; any other model with non-zero
    coefficients is refused.

    :raises InputError: K that is no calibration (not finite, focal lengths not positive, last
        row not 0 0 1), D not finite or of a length the model cannot use, an ROI outside the
        image or a binning larger than it.
    """

    SUPPORTED = ('', 'plumb_bob', 'rational_polynomial', 'equidistant')

    def __init__(self, info):
        K = _float_array(info, 'k', 9).reshape(3, 3)
        if not _usable_k(K):
            raise InputError('CameraInfo has no valid K (focal lengths must be positive and '
                             'all values finite): is the camera calibrated?')
        if np.abs(K[2] - (0.0, 0.0, 1.0)).max() > 1e-6:
            raise InputError(f'CameraInfo K has last row {K[2].tolist()}, not [0, 0, 1]: not a '
                             'pinhole calibration; check the camera_info_url / calibration file')
        full_w, full_h = _count(info, 'width', 'CameraInfo'), _count(info, 'height', 'CameraInfo')
        model = getattr(info, 'distortion_model', '') or ''
        if not isinstance(model, str):
            raise InputError(f'CameraInfo distortion_model is {model!r}, not a string')
        self.model = model
        self.D = _float_array(info, 'd')
        if not np.all(np.isfinite(self.D)):
            raise InputError(f'CameraInfo D has non-finite distortion coefficients '
                             f'{self.D.tolist()}: recalibrate the camera')
        self.distorted = bool(self.D.size and np.any(self.D != 0))
        if self.distorted:
            if self.model not in self.SUPPORTED:
                raise InputError(f'distortion model {self.model!r} is not supported (supported: '
                                 'plumb_bob, rational_polynomial, equidistant); rectify the '
                                 'images first (image_proc) and subscribe to image_rect')
            if self.model == 'equidistant' and self.D.size < 4:
                raise InputError(f'distortion model equidistant needs 4 coefficients in D, '
                                 f'CameraInfo has {self.D.size}')
            if self.model != 'equidistant' and self.D.size not in _OPENCV_DISTORTION_SIZES:
                raise InputError(f'distortion model {self.model or "(empty)"} with '
                                 f'{self.D.size} coefficients in D: OpenCV takes 4, 5, 8, 12 or '
                                 '14 (plumb_bob has 5, rational_polynomial 8)')
        self.K, self.width, self.height = self._published_window(info, K, full_w, full_h)
        self._maps = {}

    @staticmethod
    def _published_window(info, K, full_w, full_h):
        """K and size of the published images, after the ROI and binning CameraInfo gives."""
        bx = _count(info, 'binning_x', 'CameraInfo') or 1  # 0 means 1, as in CameraInfo.msg
        by = _count(info, 'binning_y', 'CameraInfo') or 1
        roi = getattr(info, 'roi', None)
        rx = ry = rw = rh = 0
        if roi is not None:
            rx, ry, rw, rh = (_count(roi, f, 'CameraInfo roi')
                              for f in ('x_offset', 'y_offset', 'width', 'height'))
        if rw == 0 or rh == 0:  # all zeros (or no size): the full resolution
            rx, ry, rw, rh = 0, 0, full_w, full_h
        if full_w and full_h and (rx + rw > full_w or ry + rh > full_h):
            raise InputError(f'CameraInfo roi {rw}x{rh} at ({rx}, {ry}) lies outside the '
                             f'{full_w}x{full_h} calibrated image: fix the driver settings')
        if (rw and bx > rw) or (rh and by > rh):
            raise InputError(f'CameraInfo binning {bx}x{by} is larger than the {rw}x{rh} image '
                             'window: fix the driver settings')
        if (rx, ry, bx, by) == (0, 0, 1, 1):
            return K, rw, rh
        K = K.copy()
        K[0, 2] -= rx
        K[1, 2] -= ry
        K[0] /= bx
        K[1] /= by
        if not _usable_k(K):
            raise InputError(f'CameraInfo K after binning {bx}x{by} is not usable: fix the '
                             'driver settings')
        return K, rw // bx, rh // by

    def intrinsics_for(self, width, height):
        """
        K for an image of ``width x height`` (scaled when CameraInfo is for another size).

        :raises InputError: an empty image, another aspect ratio than CameraInfo's images, or a
            scaled K that is not finite.
        """
        if width <= 0 or height <= 0:
            raise InputError(f'image is empty: {width}x{height}')
        if self.width <= 0 or self.height <= 0 or (width, height) == (self.width, self.height):
            return self.K
        # The same view resized keeps its aspect ratio, up to rounding to whole pixels.
        ratio = (width / height) / (self.width / self.height)
        if abs(ratio - 1) > 0.01 + 1.0 / min(width, height):
            raise InputError(f'the image is {width}x{height} but CameraInfo is for '
                             f'{self.width}x{self.height} images (another aspect ratio, so not '
                             'the same view resized): publish the CameraInfo of this stream')
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        with np.errstate(over='ignore', under='ignore'):  # checked below
            K[0, 0] *= sx
            K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
            K[1, 1] *= sy
            K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        if not _usable_k(K):
            raise InputError(f'CameraInfo K scaled from {self.width}x{self.height} to the '
                             f'{width}x{height} image is not finite: check the calibration')
        return K

    def prepare(self, rgb, interpolation=cv2.INTER_LINEAR):
        """
        Return ``(image, K)`` ready for the pinhole core: undistorted when needed.

        :param interpolation: OpenCV interpolation of the remap (``cv2.INTER_NEAREST`` for depth
            images, whose values must not blend across edges).
        :raises InputError: see :meth:`intrinsics_for`; or OpenCV cannot undistort with D.
        """
        h, w = rgb.shape[:2]
        K = self.intrinsics_for(w, h)
        if not self.distorted:
            return rgb, K
        key = (w, h)
        if key not in self._maps:
            try:
                if self.model == 'equidistant':
                    maps = cv2.fisheye.initUndistortRectifyMap(
                        K, self.D[:4], np.eye(3), K, (w, h), cv2.CV_16SC2)
                else:
                    maps = cv2.initUndistortRectifyMap(K, self.D, np.eye(3), K, (w, h),
                                                       cv2.CV_16SC2)
            except cv2.error as e:
                raise InputError(f'cannot undistort with CameraInfo ({self.model}, D '
                                 f'{self.D.tolist()}): {str(e).strip().splitlines()[-1]}') from e
            # Sizes may change mid-stream: keep the maps of the last few only.
            while len(self._maps) >= _MAX_CACHED_MAPS:
                self._maps.pop(next(iter(self._maps)))
            self._maps[key] = maps
        m1, m2 = self._maps[key]
        return cv2.remap(rgb, m1, m2, interpolation), K


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

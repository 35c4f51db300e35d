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
The EuRoC MAV dataset (one camera and the Vicon ground truth) as a ROS 2 bag, as a robot records.

It reads this layout under a folder:

* ``cam0/data.csv``: ``#timestamp [ns],filename`` lines, the images being ``cam0/data/<filename>``
  (752x480 mono8 PNG in EuRoC),
* ``cam0/sensor.yaml``: OpenCV-style YAML (``%YAML:1.0``) with ``T_BS`` (the camera in the body,
  4x4), ``intrinsics: [fu, fv, cu, cv]``, ``distortion_model: radial-tangential`` with
  ``distortion_coefficients: [k1, k2, p1, p2]``, ``resolution: [width, height]`` and ``rate_hz``,
* ``groundtruth_body.txt``: ``t[ns] x y z qw qx qy qz`` per line (the body in the world; the
  quaternion is **w first**), ``#`` comment lines,

and writes, every message logged at its own stamp, in time order:

* ``/cam0/image_raw`` (sensor_msgs/Image, the PNG's pixels: mono8 for EuRoC),
* ``/cam0/camera_info`` (CameraInfo, plumb_bob ``[k1, k2, p1, p2, 0]``, one per image),
* ``/tf``: ``world -> body`` at every ground-truth sample,
* ``/tf_static``: ``body -> cam0`` (``T_BS``) once, at the first stamp, transient-local.
"""

from decimal import Decimal, InvalidOperation
import heapq
import os
import re
import shutil

import cv2
import numpy as np
from tqdm import tqdm
import yaml

from scene_reloc.geometry import nearest_rotation, quaternion_xyzw_to_rotation
from scene_reloc_training.data.bags import (
    BagWriter,
    camera_info,
    raw_image,
    T,
    transform_stamped,
)

CAMERA = 'cam0'
IMAGES_CSV = os.path.join(CAMERA, 'data.csv')
SENSOR_YAML = os.path.join(CAMERA, 'sensor.yaml')
GROUND_TRUTH = 'groundtruth_body.txt'
IMAGE_TOPIC = f'/{CAMERA}/image_raw'
INFO_TOPIC = f'/{CAMERA}/camera_info'
RADTAN = ('radial-tangential', 'radtan', 'plumb_bob')
# Encoding of an image as cv2.imread(IMREAD_UNCHANGED) returns it: (dtype, channels) -> name.
ENCODINGS = {('uint8', 1): 'mono8', ('uint16', 1): 'mono16', ('uint8', 3): 'bgr8',
             ('uint8', 4): 'bgra8'}


def _ns(text, where):
    """Parse a nanosecond stamp exactly (``1403715274312143104.0000000000`` is not a float)."""
    try:
        return int(Decimal(text.strip()).to_integral_value())
    except InvalidOperation:
        raise ValueError(f'{where}: {text!r} is not a timestamp in nanoseconds') from None


def _load_opencv_yaml(path):
    """Read an OpenCV FileStorage YAML: drop its ``%YAML:1.0`` directive and matrix tags."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r'^%YAML.*$', '', text, count=1, flags=re.M)
    text = re.sub(r'!!opencv-(matrix|nd-matrix)', '', text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f'{path}: not readable YAML: {e}') from None
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping of sensor fields')
    return data


def _floats(data, key, path, sizes):
    """Return field ``key`` as a flat float array of one of the ``sizes``."""
    value = data.get(key)
    if isinstance(value, dict):    # OpenCV matrix: {rows, cols, data}
        value = value.get('data')
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        arr = None
    if value is None or arr is None or arr.size not in sizes or not np.all(np.isfinite(arr)):
        want = ' or '.join(str(s) for s in sizes)
        raise ValueError(f'{path}: {key} must hold {want} finite numbers, got {value!r}')
    return arr


def read_euroc_camera(folder):
    """
    Read ``cam0/sensor.yaml`` of an EuRoC folder.

    :return: ``(K, D, (width, height), body_from_cam, rate_hz)``: K 3x3, D the five plumb_bob
        coefficients ``[k1, k2, p1, p2, 0]``, body_from_cam the 4x4 ``T_BS`` (its rotation
        projected onto the nearest rotation), rate_hz a float or None when the file has none.
    :raises ValueError: a missing or malformed field, a camera model other than pinhole, or a
        distortion model other than radial-tangential.
    """
    path = os.path.join(folder, SENSOR_YAML)
    data = _load_opencv_yaml(path)
    model = str(data.get('camera_model', 'pinhole'))
    if model != 'pinhole':
        raise ValueError(f'{path}: camera_model {model!r} is not supported (pinhole only)')
    distortion = str(data.get('distortion_model', 'radial-tangential'))
    if distortion not in RADTAN:
        raise ValueError(f'{path}: distortion_model {distortion!r} is not supported: only '
                         'radial-tangential (plumb_bob) converts to CameraInfo here')
    fu, fv, cu, cv = _floats(data, 'intrinsics', path, (4,))
    K = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
    D = np.zeros(5)
    if 'distortion_coefficients' in data:
        d = _floats(data, 'distortion_coefficients', path, (4, 5))
        D[:d.size] = d
    width, height = _floats(data, 'resolution', path, (2,))
    if width != int(width) or height != int(height) or width < 1 or height < 1:
        raise ValueError(f'{path}: resolution must be two positive integers')
    body_from_cam = _floats(data, 'T_BS', path, (16,)).reshape(4, 4)
    R = body_from_cam[:3, :3]
    if (not np.allclose(body_from_cam[3], [0, 0, 0, 1])
            or np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0):
        raise ValueError(f'{path}: T_BS is not a rigid transform:\n{body_from_cam}')
    body_from_cam[:3, :3] = nearest_rotation(R)
    rate = data.get('rate_hz')
    return K, D, (int(width), int(height)), body_from_cam, (
        None if rate is None else float(rate))


def read_euroc_images(folder):
    """Return ``[(stamp_ns, image path)]`` from ``cam0/data.csv``, in time order."""
    path = os.path.join(folder, IMAGES_CSV)
    images = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            fields = [s.strip() for s in line.split(',')]
            if len(fields) < 2 or not fields[1]:
                raise ValueError(f'{path}:{i}: expected "timestamp [ns],filename", got {line!r}')
            images.append((_ns(fields[0], f'{path}:{i}'),
                           os.path.join(folder, CAMERA, 'data', fields[1])))
    if not images:
        raise ValueError(f'{path} lists no images')
    missing = [p for _, p in images if not os.path.isfile(p)]
    if missing:
        raise ValueError(f'{len(missing)} of the {len(images)} images in {path} are missing, '
                         f'e.g. {missing[0]}')
    return sorted(images)


def read_euroc_ground_truth(folder):
    """
    Read ``groundtruth_body.txt`` (``t[ns] x y z qw qx qy qz``; spaces or commas).

    :return: ``(stamps_ns, world_from_body)``: int64 (N,), and (N, 4, 4), in time order.
    """
    path = os.path.join(folder, GROUND_TRUTH)
    stamps, poses = [], []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            fields = re.split(r'[\s,]+', line)
            try:
                v = [float(s) for s in fields[1:8]]
            except ValueError:
                v = []
            if len(v) < 7 or not np.all(np.isfinite(v)):
                raise ValueError(f'{path}:{i}: expected "t[ns] x y z qw qx qy qz", got {line!r}')
            qw, qx, qy, qz = v[3:7]
            if np.linalg.norm(v[3:7]) < 1e-6:
                raise ValueError(f'{path}:{i}: the quaternion is zero')
            pose = np.eye(4)
            pose[:3, :3] = quaternion_xyzw_to_rotation([qx, qy, qz, qw])
            pose[:3, 3] = v[:3]
            stamps.append(_ns(fields[0], f'{path}:{i}'))
            poses.append(pose)
    if not stamps:
        raise ValueError(f'{path} holds no ground-truth poses')
    order = np.argsort(stamps, kind='stable')
    return np.asarray(stamps, np.int64)[order], np.asarray(poses)[order]


def _check_layout(folder):
    if not os.path.isdir(folder):
        raise ValueError(f'{folder} is not a folder')
    missing = [p for p in (IMAGES_CSV, SENSOR_YAML, GROUND_TRUTH)
               if not os.path.isfile(os.path.join(folder, p))]
    if missing:
        raise ValueError(f'{folder} is not an EuRoC camera folder: it has no '
                         f'{", ".join(missing)} (expected {IMAGES_CSV}, {CAMERA}/data/*.png, '
                         f'{SENSOR_YAML} and {GROUND_TRUTH})')


def _read_image(path, size):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot read image {path}')
    encoding = ENCODINGS.get((str(img.dtype), 1 if img.ndim == 2 else img.shape[2]))
    if encoding is None:
        raise ValueError(f'{path}: unsupported image ({img.dtype}, shape {img.shape})')
    if (img.shape[1], img.shape[0]) != size:
        raise ValueError(f'{path} is {img.shape[1]}x{img.shape[0]} but {SENSOR_YAML} says '
                         f'{size[0]}x{size[1]}: the intrinsics would not fit it')
    return img, encoding


def euroc_to_bag(folder, out, storage='mcap', camera_frame='cam0', body_frame='body',
                 world_frame='world', progress=True):
    """
    Write one EuRoC camera and its ground truth as a ROS 2 bag (topics in the module docstring).

    All messages are logged at their own stamps in time order (at equal stamps: /tf_static,
    /tf, camera_info, image). Nothing is written when the folder does not read; a failure while
    writing removes the partial bag.

    :param out: bag to write (a folder; must not exist).
    :return: dict: ``bag``, ``images``, ``ground_truth`` (samples), ``images_in_ground_truth``
        (images whose stamp lies within the ground truth's time span).
    :raises ValueError: not an EuRoC layout, an unsupported camera, an existing ``out``.
    """
    if os.path.lexists(out):
        raise ValueError(f'{out} exists; choose a new bag path')
    _check_layout(folder)
    K, D, size, body_from_cam, _ = read_euroc_camera(folder)
    images = read_euroc_images(folder)
    gt_ns, gt_poses = read_euroc_ground_truth(folder)
    first = min(images[0][0], int(gt_ns[0]))
    # Sort lightweight keys only: messages (images) are made one at a time while writing.
    events = heapq.merge(((int(ns), 1, j) for j, ns in enumerate(gt_ns)),
                         ((ns, 2, i) for i, (ns, _) in enumerate(images)))
    bag = BagWriter(out, storage)
    try:
        bag.write('/tf_static', T['tf2_msgs/msg/TFMessage'](transforms=[
            transform_stamped(first, body_frame, camera_frame, body_from_cam)]), first,
            static=True)
        with tqdm(total=len(images), desc='writing bag', unit='image',
                  disable=not progress) as bar:
            for ns, kind, j in events:
                if kind == 1:
                    bag.write('/tf', T['tf2_msgs/msg/TFMessage'](transforms=[
                        transform_stamped(ns, world_frame, body_frame, gt_poses[j])]), ns)
                    continue
                img, encoding = _read_image(images[j][1], size)
                bag.write(INFO_TOPIC, camera_info(ns, camera_frame, K, size[0], size[1], D,
                                                  'plumb_bob'), ns)
                bag.write(IMAGE_TOPIC, raw_image(ns, camera_frame, img, encoding), ns)
                bar.update()
    except BaseException:
        try:
            bag.close()
        except Exception:  # the first error is the one to report
            pass
        shutil.rmtree(out, ignore_errors=True)
        raise
    bag.close()
    stamps = np.array([ns for ns, _ in images], np.int64)
    inside = int(np.count_nonzero((stamps >= gt_ns[0]) & (stamps <= gt_ns[-1])))
    return {'bag': out, 'images': len(images), 'ground_truth': int(len(gt_ns)),
            'images_in_ground_truth': inside}

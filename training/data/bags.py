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
ROS 2 bags without ROS (rosbags): posed frames to a bag, and the readers the other tools share.

A bag written by :func:`dataset_to_bag` holds, stamped at ``rate`` Hz from a fixed start time:

* ``/camera/image/compressed`` (CompressedImage, jpeg) or ``/camera/image`` (Image, rgb8),
* ``/camera/camera_info`` (CameraInfo, plumb_bob with zero distortion),
* ``/camera/depth/image`` (Image, 16UC1 millimetres) unless ``depth=False``,
* ``/tf``: ``odom -> camera``, odometry that equals the ground truth seen from an ``odom`` frame
  offset from ``map`` by ``map_from_odom`` (so a relocalizer must find that offset), and
  ``map -> camera_gt``, the ground truth itself,
* ``/ground_truth/pose`` (PoseStamped of the camera in ``map``).
"""

import os

import cv2
import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from tqdm import tqdm

from scene_reloc.geometry import invert_pose, rotation_to_quaternion_xyzw
from scene_reloc.ros.conversions import (
    compressed_to_rgb,
    image_to_rgb,
    stamp_to_ns,
    transform_to_matrix,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
START_NS = 1_700_000_000 * 1_000_000_000
GT_SUFFIX = '_gt'
_Z = QosTime(0, 0)
STATIC_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                 _Z, _Z, QosLiveliness.AUTOMATIC, _Z, False)


def _time(ns):
    return T['builtin_interfaces/msg/Time'](sec=int(ns // 10**9), nanosec=int(ns % 10**9))


def _header(ns, frame):
    return T['std_msgs/msg/Header'](stamp=_time(ns), frame_id=frame)


def _vec(v):
    return T['geometry_msgs/msg/Vector3'](x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _quat(R):
    q = rotation_to_quaternion_xyzw(R)
    return T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3])


def transform_stamped(ns, parent, child, parent_from_child):
    return T['geometry_msgs/msg/TransformStamped'](
        header=_header(ns, parent), child_frame_id=child,
        transform=T['geometry_msgs/msg/Transform'](translation=_vec(parent_from_child[:3, 3]),
                                                   rotation=_quat(parent_from_child[:3, :3])))


def pose_stamped(ns, frame, world_from_body):
    p = world_from_body[:3, 3]
    return T['geometry_msgs/msg/PoseStamped'](
        header=_header(ns, frame), pose=T['geometry_msgs/msg/Pose'](
            position=T['geometry_msgs/msg/Point'](x=p[0], y=p[1], z=p[2]),
            orientation=_quat(world_from_body[:3, :3])))


def camera_info(ns, frame, K, width, height, d=None, model='plumb_bob'):
    """
    Return a CameraInfo with ``P = [K|0]`` and ``R = I``.

    :param d: distortion coefficients of ``model`` (default: five zeros, no distortion).
    """
    P = np.zeros((3, 4))
    P[:3, :3] = K
    d = np.zeros(5) if d is None else np.asarray(d, float).ravel()
    return T['sensor_msgs/msg/CameraInfo'](
        header=_header(ns, frame), height=height, width=width, distortion_model=model,
        d=d, k=np.asarray(K, float).ravel(), r=np.eye(3).ravel(), p=P.ravel(),
        binning_x=0, binning_y=0, roi=T['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def raw_image(ns, frame, arr, encoding):
    arr = np.ascontiguousarray(arr)
    return T['sensor_msgs/msg/Image'](
        header=_header(ns, frame), height=arr.shape[0], width=arr.shape[1], encoding=encoding,
        is_bigendian=0, step=arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1),
        data=arr.view(np.uint8).ravel())


def compressed_image(ns, frame, rgb, quality=95):
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return T['sensor_msgs/msg/CompressedImage'](header=_header(ns, frame), format='jpeg',
                                                data=np.frombuffer(buf.tobytes(), np.uint8))


class BagWriter:
    """Thin wrapper: one connection per topic, CDR-serialised writes."""

    def __init__(self, path, storage='mcap'):
        if os.path.exists(path):
            raise FileExistsError(f'{path} exists; choose a new bag path')
        plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise ValueError(f'storage must be mcap or sqlite3, got {storage!r}')
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.conns = {}

    def write(self, topic, msg, ns, static=False):
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(
                topic, msg.__msgtype__, typestore=TYPESTORE,
                offered_qos_profiles=[STATIC_QOS] if static else ())
        self.writer.write(self.conns[topic], ns,
                          TYPESTORE.serialize_cdr(msg, msg.__msgtype__))

    def close(self):
        self.writer.close()


def dataset_to_bag(frames, out, storage='mcap', rate=30.0, camera_frame='camera',
                   compressed=True, depth=True, map_from_odom=None, progress=True):
    """
    Write posed frames as a bag (topics in the module docstring).

    :param map_from_odom: 4x4 offset of the simulated odometry frame (default: 0.5 m, -0.2 m,
        17 deg yaw).
    :return: list of (stamp_ns, stem).
    """
    if map_from_odom is None:
        c, s = np.cos(0.3), np.sin(0.3)
        map_from_odom = np.array([[c, -s, 0, 0.5], [s, c, 0, -0.2], [0, 0, 1, 0], [0, 0, 0, 1]])
    odom_from_map = invert_pose(map_from_odom)
    bag = BagWriter(out, storage)
    stamps = []
    try:
        for i, fr in enumerate(tqdm(frames, desc='writing bag', unit='frame',
                                    disable=not progress)):
            ns = START_NS + int(round(i * 1e9 / rate))
            rgb, pose = fr.load_color(), fr.load_pose()
            h, w = rgb.shape[:2]
            tf = T['tf2_msgs/msg/TFMessage'](transforms=[
                transform_stamped(ns, 'odom', camera_frame, odom_from_map @ pose),
                transform_stamped(ns, 'map', camera_frame + GT_SUFFIX, pose)])
            bag.write('/tf', tf, ns)
            bag.write('/ground_truth/pose', pose_stamped(ns, 'map', pose), ns)
            bag.write('/camera/camera_info', camera_info(ns, camera_frame, fr.K, w, h), ns)
            if compressed:
                bag.write('/camera/image/compressed', compressed_image(ns, camera_frame, rgb), ns)
            else:
                bag.write('/camera/image', raw_image(ns, camera_frame, rgb, 'rgb8'), ns)
            d = fr.load_depth() if depth else None
            if d is not None:
                mm = np.clip(np.round(d * 1000), 0, 65535).astype(np.uint16)
                bag.write('/camera/depth/image', raw_image(ns, camera_frame, mm, '16UC1'), ns)
            stamps.append((ns, fr.stem))
    finally:
        bag.close()
    return stamps


def read_messages(path, topics):
    """Yield (topic, stamp_ns of the log, deserialised message) for ``topics`` in log order."""
    with Reader(path) as reader:
        have = {c.topic for c in reader.connections}
        missing = [t for t in topics if t not in have]
        if missing:
            raise ValueError(f'{path} has no topic {", ".join(missing)}; it has: '
                             f'{", ".join(sorted(have))}')
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, ns, raw in reader.messages(connections=conns):
            yield conn.topic, ns, TYPESTORE.deserialize_cdr(raw, conn.msgtype)


def bag_topics(path):
    """Topic -> message type of a bag."""
    with Reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def decode_image(msg):
    """Image or CompressedImage (rosbags or rclpy) -> RGB uint8."""
    return compressed_to_rgb(msg) if hasattr(msg, 'format') else image_to_rgb(msg)


def fill_tf(buffer, msg, static=False):
    for t in msg.transforms:
        buffer.set_transform(t.header.frame_id, t.child_frame_id, stamp_to_ns(t.header.stamp),
                             transform_to_matrix(t.transform), static)

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
ROS 2 bags without ROS (rosbags): posed frames to a bag, and a robot's recording to posed frames.

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
from scene_reloc.posed_frames import write_frame
from scene_reloc.ros.conversions import (
    compressed_to_rgb,
    image_to_rgb,
    InputError,
    stamp_to_ns,
    transform_to_matrix,
)
from scene_reloc.transform_buffer import TransformBuffer, TransformError

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


def camera_info(ns, frame, K, width, height):
    P = np.zeros((3, 4))
    P[:3, :3] = K
    return T['sensor_msgs/msg/CameraInfo'](
        header=_header(ns, frame), height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5), k=np.asarray(K, float).ravel(), r=np.eye(3).ravel(), p=P.ravel(),
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


def bag_to_dataset(bag, out, image_topic, info_topic, world_frame='map', camera_frame=None,
                   depth_topic=None, every=1, max_depth_gap_s=0.02, progress=True):
    """
    Turn a robot recording (images, CameraInfo, /tf from SLAM or odometry) into posed frames.

    Each kept image gets the pose ``world_frame <- camera`` from /tf at its stamp, and the depth
    image nearest in time (within ``max_depth_gap_s``) when ``depth_topic`` is given. Images
    whose pose cannot be looked up (before TF starts, extrapolation) are skipped and counted.

    :return: dict with the written stems and the skip counts.
    """
    topics = [image_topic, info_topic] + ([depth_topic] if depth_topic else [])
    have = bag_topics(bag)
    topics += [t for t in ('/tf', '/tf_static') if t in have]
    if '/tf' not in have and '/tf_static' not in have:
        raise ValueError(f'{bag} has no /tf or /tf_static: the images cannot be posed')
    buffer = TransformBuffer(cache_seconds=1e6)
    images, depths, K, size = [], [], None, None
    for topic, _, msg in read_messages(bag, topics):
        if topic in ('/tf', '/tf_static'):
            fill_tf(buffer, msg, topic == '/tf_static')
        elif topic == info_topic and K is None:
            K, size = np.asarray(msg.k, float).reshape(3, 3), (msg.width, msg.height)
        elif topic == image_topic:
            images.append(msg)
        elif topic == depth_topic:
            depths.append(msg)
    if K is None:
        raise ValueError(f'no CameraInfo on {info_topic}: cannot write intrinsics')
    os.makedirs(out, exist_ok=True)
    np.savetxt(os.path.join(out, 'camera-intrinsics.txt'), K)
    depth_ns = np.array([stamp_to_ns(d.header.stamp) for d in depths], dtype=np.int64)
    stems, skipped = [], {'no_pose': 0, 'no_depth': 0, 'bad_image': 0}
    for i, msg in enumerate(tqdm(images[::every], desc='writing frames', unit='frame',
                                 disable=not progress)):
        ns = stamp_to_ns(msg.header.stamp)
        try:
            pose = buffer.lookup(world_frame, camera_frame or msg.header.frame_id, ns)
            rgb = decode_image(msg)
        except TransformError:
            skipped['no_pose'] += 1
            continue
        except InputError:
            skipped['bad_image'] += 1
            continue
        depth_m = None    # no depth topic: no depth files (never an all-invalid fake)
        if depth_topic:
            j = int(np.argmin(np.abs(depth_ns - ns))) if len(depth_ns) else -1
            if j < 0 or abs(depth_ns[j] - ns) > max_depth_gap_s * 1e9:
                skipped['no_depth'] += 1
                continue
            depth_m = _depth_to_m(depths[j])
        stem = f'frame-{i:06d}'
        write_frame(out, stem, rgb, depth_m, pose)
        stems.append(stem)
    with open(os.path.join(out, 'frames.txt'), 'w') as f:
        f.write(f'# from {bag} ({image_topic}, poses {world_frame} <- camera)\n')
        f.writelines(s + '\n' for s in stems)
    return {'out': out, 'frames': len(stems), 'skipped': skipped, 'image_size': size}


def _depth_to_m(msg):
    enc = msg.encoding.lower()
    data = np.frombuffer(msg.data, np.uint8)
    if enc in ('16uc1', 'mono16'):
        d = data.view(np.uint16).reshape(msg.height, -1)[:, :msg.width].astype(np.float32) / 1000
        d[d >= 65.535] = 0
    elif enc == '32fc1':
        d = data.view(np.float32).reshape(msg.height, -1)[:, :msg.width].copy()
        d[~np.isfinite(d)] = 0
    else:
        raise InputError(f'unsupported depth encoding {msg.encoding!r} (16UC1 mm or 32FC1 m)')
    return d

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

"""The EuRoC MAV converter, on a tiny EuRoC-layout folder written by the test."""

import json
import os

import cv2
import numpy as np
import pytest
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader

from scene_reloc.geometry import (
    quaternion_xyzw_to_rotation,
    rotation_to_quaternion_xyzw,
    rotvec_to_matrix,
)
from scene_reloc.ros.conversions import stamp_to_ns, transform_to_matrix
from scene_reloc.transform_buffer import TransformBuffer
from scene_reloc_training.cli import main
from scene_reloc_training.data.bags import bag_topics, fill_tf, read_messages
from scene_reloc_training.data.euroc import euroc_to_bag, read_euroc_camera

T0 = 1403715273262142976      # a real EuRoC stamp: beyond float64's exact integers
IMAGE_STEP = 50_000_000       # 20 Hz
GT_STEP = 5_000_000           # 200 Hz
N_IMAGES, W, H = 6, 40, 30
FU, FV, CU, CV = 45.8654, 45.7296, 19.7215, 14.8375
DIST = [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05]
BODY_FROM_CAM = np.eye(4)
BODY_FROM_CAM[:3, :3] = rotvec_to_matrix([0.02, -0.03, 1.55])
BODY_FROM_CAM[:3, 3] = [-0.0216, -0.0647, 0.0098]


def _gt_pose(i):
    """Return (t, quaternion w x y z) of ground-truth sample i: both vary, x y z all non-zero."""
    t = np.array([0.87 + 0.01 * i, 2.2 - 0.02 * i, 0.93 + 0.005 * i])
    R = rotvec_to_matrix([0.3 + 0.01 * i, -0.5, 0.8 - 0.02 * i])
    x, y, z, w = rotation_to_quaternion_xyzw(R)
    return t, np.array([w, x, y, z])


def write_euroc(root, distortion_model='radial-tangential'):
    """Write a tiny EuRoC folder: 6 images at 20 Hz, ground truth at 200 Hz over images 2-4."""
    cam = root / 'cam0'
    (cam / 'data').mkdir(parents=True)
    rng = np.random.default_rng(0)
    stamps, images = [], []
    with open(cam / 'data.csv', 'w') as f:
        f.write('#timestamp [ns],filename\n')
        for i in range(N_IMAGES):
            ns = T0 + i * IMAGE_STEP
            img = rng.integers(0, 256, (H, W), dtype=np.uint8)
            cv2.imwrite(str(cam / 'data' / f'{ns}.png'), img)
            f.write(f'{ns},{ns}.png\n')
            stamps.append(ns)
            images.append(img)
    rows = ',\n         '.join(', '.join(repr(float(v)) for v in row) for row in BODY_FROM_CAM)
    (cam / 'sensor.yaml').write_text(
        '%YAML:1.0\n# General sensor definitions.\nsensor_type: camera\n'
        'comment: VI-Sensor cam0 (MT9M034)\n\n# Sensor extrinsics wrt. the body-frame.\n'
        f'T_BS:\n  cols: 4\n  rows: 4\n  data: [{rows}]\n\n'
        f'rate_hz: 20\nresolution: [{W}, {H}]\ncamera_model: pinhole\n'
        f'intrinsics: [{FU}, {FV}, {CU}, {CV}] #fu, fv, cu, cv\n'
        f'distortion_model: {distortion_model}\n'
        f'distortion_coefficients: [{", ".join(str(d) for d in DIST)}]\n')
    gt = []
    with open(root / 'groundtruth_body.txt', 'w') as f:
        f.write('#timestamp [ns] p_RS_R_x [m] p_RS_R_y [m] p_RS_R_z [m] q_RS_w [] q_RS_x [] '
                'q_RS_y [] q_RS_z []\n')
        for i in range(2 * IMAGE_STEP // GT_STEP + 1):
            ns = stamps[2] + i * GT_STEP
            t, q = _gt_pose(i)
            f.write(f'{ns}.0000000000 ' + ' '.join(f'{v:.12f}' for v in [*t, *q]) + '\n')
            gt.append((ns, t, q))
    return stamps, images, gt


def _file_pose(t, q_wxyz):
    pose = np.eye(4)
    pose[:3, :3] = quaternion_xyzw_to_rotation([*q_wxyz[1:], q_wxyz[0]])
    pose[:3, 3] = t
    return pose


@pytest.fixture
def euroc_bag(tmp_path):
    stamps, images, gt = write_euroc(tmp_path / 'euroc')
    bag = str(tmp_path / 'bag')
    out = euroc_to_bag(str(tmp_path / 'euroc'), bag, progress=False)
    return out, bag, stamps, images, gt


def test_read_euroc_camera(tmp_path):
    write_euroc(tmp_path)
    K, D, size, body_from_cam, rate = read_euroc_camera(str(tmp_path))
    np.testing.assert_allclose(K, [[FU, 0, CU], [0, FV, CV], [0, 0, 1]])
    np.testing.assert_allclose(D, DIST + [0.0])
    assert size == (W, H) and rate == 20.0
    np.testing.assert_allclose(body_from_cam, BODY_FROM_CAM, atol=1e-12)


def test_euroc_to_bag_writes_a_robot_recording(euroc_bag):
    out, bag, stamps, images, gt = euroc_bag
    # Images 2, 3, 4 lie within the ground truth (it starts and ends on image stamps).
    assert out == {'bag': bag, 'images': N_IMAGES, 'ground_truth': len(gt),
                   'images_in_ground_truth': 3}
    assert bag_topics(bag) == {'/cam0/image_raw': 'sensor_msgs/msg/Image',
                               '/cam0/camera_info': 'sensor_msgs/msg/CameraInfo',
                               '/tf': 'tf2_msgs/msg/TFMessage',
                               '/tf_static': 'tf2_msgs/msg/TFMessage'}
    msgs = list(read_messages(bag, ['/cam0/image_raw', '/cam0/camera_info', '/tf',
                                    '/tf_static']))
    log = [ns for _, ns, _ in msgs]
    assert log == sorted(log) and log[0] == T0
    by_topic = {}
    for topic, ns, msg in msgs:
        by_topic.setdefault(topic, []).append((ns, msg))

    imgs = by_topic['/cam0/image_raw']
    assert [ns for ns, _ in imgs] == stamps
    for (ns, msg), want in zip(imgs, images):
        assert stamp_to_ns(msg.header.stamp) == ns and msg.header.frame_id == 'cam0'
        assert msg.encoding == 'mono8' and (msg.width, msg.height, msg.step) == (W, H, W)
        np.testing.assert_array_equal(np.asarray(msg.data).reshape(H, W), want)

    infos = by_topic['/cam0/camera_info']
    assert [stamp_to_ns(m.header.stamp) for _, m in infos] == stamps
    info = infos[0][1]
    assert info.distortion_model == 'plumb_bob' and info.header.frame_id == 'cam0'
    assert (info.width, info.height) == (W, H)
    np.testing.assert_allclose(info.k, [FU, 0, CU, 0, FV, CV, 0, 0, 1])
    np.testing.assert_allclose(info.d, DIST + [0.0])
    np.testing.assert_allclose(info.r, np.eye(3).ravel())
    np.testing.assert_allclose(info.p, [FU, 0, CU, 0, 0, FV, CV, 0, 0, 0, 1, 0])

    (ns, static), = by_topic['/tf_static']
    (tf,) = static.transforms
    assert ns == T0 == stamp_to_ns(tf.header.stamp)
    assert (tf.header.frame_id, tf.child_frame_id) == ('body', 'cam0')
    np.testing.assert_allclose(transform_to_matrix(tf.transform), BODY_FROM_CAM, atol=1e-12)
    with Reader(bag) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert qos['/tf_static'][0].durability == QosDurability.TRANSIENT_LOCAL

    tfs = by_topic['/tf']
    assert [ns for ns, _ in tfs] == [g[0] for g in gt]
    for (_, msg), (gt_ns, t, q_wxyz) in zip(tfs, gt):
        (tf,) = msg.transforms
        assert stamp_to_ns(tf.header.stamp) == gt_ns
        assert (tf.header.frame_id, tf.child_frame_id) == ('world', 'body')
        r = tf.transform.rotation
        q_xyzw = np.array([r.x, r.y, r.z, r.w])
        want = np.array([*q_wxyz[1:], q_wxyz[0]])     # the file is w x y z, ROS x y z w
        assert min(np.abs(q_xyzw - want).max(), np.abs(q_xyzw + want).max()) < 1e-9
        tr = tf.transform.translation
        np.testing.assert_allclose([tr.x, tr.y, tr.z], t, atol=1e-12)


def test_tf_looks_up_the_camera_pose_at_an_image_stamp(euroc_bag):
    _, bag, stamps, _, gt = euroc_bag
    buffer = TransformBuffer(cache_seconds=1e6)
    for topic, _, msg in read_messages(bag, ['/tf', '/tf_static']):
        fill_tf(buffer, msg, topic == '/tf_static')
    ns = stamps[3]     # image 3 falls on ground-truth sample 10
    (gt_ns, t, q), = [g for g in gt if g[0] == ns]
    want = _file_pose(t, q) @ BODY_FROM_CAM
    np.testing.assert_allclose(buffer.lookup('world', 'cam0', ns), want, atol=1e-6)


def test_the_cli_prints_the_summary(tmp_path, capsys):
    write_euroc(tmp_path / 'euroc')
    bag = str(tmp_path / 'bag')
    rc = main(['euroc-to-bag', '--data', str(tmp_path / 'euroc'), '--out', bag,
               '--storage', 'sqlite3', '--quiet'])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)['images'] == N_IMAGES
    assert bag_topics(bag)['/cam0/image_raw'] == 'sensor_msgs/msg/Image'


def test_errors_are_clear(tmp_path):
    root = tmp_path / 'euroc'
    write_euroc(root)
    bag = str(tmp_path / 'bag')
    os.makedirs(bag)
    with pytest.raises(ValueError, match='exists'):
        euroc_to_bag(str(root), bag, progress=False)
    bag = str(tmp_path / 'bag2')
    os.remove(root / 'groundtruth_body.txt')
    with pytest.raises(ValueError, match='not an EuRoC camera folder.*groundtruth_body.txt'):
        euroc_to_bag(str(root), bag, progress=False)
    os.remove(root / 'cam0' / 'data.csv')
    with pytest.raises(ValueError, match=r'no cam0/data.csv, groundtruth_body.txt'):
        euroc_to_bag(str(root), bag, progress=False)
    assert not os.path.exists(bag)

    other = tmp_path / 'fisheye'
    write_euroc(other, distortion_model='equidistant')
    with pytest.raises(ValueError, match="distortion_model 'equidistant' is not supported"):
        euroc_to_bag(str(other), bag, progress=False)
    assert not os.path.exists(bag)


def test_a_bad_image_leaves_no_partial_bag(tmp_path):
    root = tmp_path / 'euroc'
    stamps, _, _ = write_euroc(root)
    (root / 'cam0' / 'data' / f'{stamps[4]}.png').write_bytes(b'not a png')
    bag = str(tmp_path / 'bag')
    with pytest.raises(ValueError, match='cannot read image'):
        euroc_to_bag(str(root), bag, progress=False)
    assert not os.path.exists(bag)

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

"""Message conversions (built from real message classes) and the rosbags tools."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from scene_reloc.geometry import pose_error
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.ros.conversions import CameraModel, compressed_to_rgb, image_to_rgb, InputError
from scene_reloc_training.data.bag_frames import bag_to_dataset
from scene_reloc_training.data.bags import bag_topics, dataset_to_bag, read_messages

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')


def rgb_image(h=6, w=5):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_image_encodings_decode_to_rgb(encoding):
    rgb = rgb_image()
    src = {'rgb8': rgb, 'bgr8': rgb[..., ::-1], 'rgba8': np.dstack([rgb, rgb[..., :1]]),
           'bgra8': np.dstack([rgb[..., ::-1], rgb[..., :1]]), 'mono8': rgb[..., 0]}[encoding]
    src = np.ascontiguousarray(src)
    ch = 1 if src.ndim == 2 else src.shape[2]
    # Rows padded to a step larger than width * channels, as some drivers do.
    step = src.shape[1] * ch + 3
    buf = np.zeros((src.shape[0], step), np.uint8)
    buf[:, :src.shape[1] * ch] = src.reshape(src.shape[0], -1)
    msg = Image(height=6, width=5, encoding=encoding, step=step, data=buf.tobytes())
    out = image_to_rgb(msg)
    want = np.dstack([rgb[..., 0]] * 3) if encoding == 'mono8' else rgb
    np.testing.assert_array_equal(out, want)


def test_bad_images_raise_input_errors():
    with pytest.raises(InputError, match='unsupported image encoding'):
        image_to_rgb(Image(height=2, width=2, encoding='16UC1', step=4, data=bytes(8)))
    with pytest.raises(InputError, match='does not match'):
        image_to_rgb(Image(height=4, width=4, encoding='rgb8', step=12, data=bytes(10)))
    with pytest.raises(InputError, match='cannot decode'):
        compressed_to_rgb(CompressedImage(format='jpeg', data=b'\xff\xd8 not a jpeg'))
    ok, jpg = cv2.imencode('.png', rgb_image()[..., ::-1])
    np.testing.assert_array_equal(compressed_to_rgb(CompressedImage(format='png',
                                                                    data=jpg.tobytes())),
                                  rgb_image())


def camera_info(w=640, h=480, d=(), model='plumb_bob'):
    info = CameraInfo(width=w, height=h, distortion_model=model)
    info.k = [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]
    info.d = list(d)
    return info


def test_intrinsics_scale_with_the_image_and_distortion_is_undistorted():
    cam = CameraModel(camera_info())
    K = cam.intrinsics_for(320, 240)
    np.testing.assert_allclose(K[:2, :3], [[250, 0, 159.5], [0, 250, 119.5]])
    # A point seen through a distorted camera lands, after prepare(), where the pinhole K says.
    D = np.array([-0.2, 0.05, 0.0, 0.0, 0.0])
    cam = CameraModel(camera_info(d=D))
    X = np.array([[0.3, -0.2, 1.0]])
    px, _ = cv2.projectPoints(X, np.zeros(3), np.zeros(3), cam.K, D)
    img = np.zeros((480, 640, 3), np.uint8)
    u, v = np.round(px[0, 0]).astype(int)
    img[v - 2:v + 3, u - 2:u + 3] = 255
    out, K = cam.prepare(img)
    ys, xs = np.nonzero(out[..., 0] > 128)
    want = K @ X[0]
    assert abs(xs.mean() - want[0] / want[2]) < 1.0 and abs(ys.mean() - want[1] / want[2]) < 1.0
    with pytest.raises(InputError, match='not supported'):
        CameraModel(camera_info(d=[0.1, 0, 0, 0], model='double_sphere'))
    bad = camera_info()
    bad.k = [0.0] * 9
    with pytest.raises(InputError, match='calibrated'):
        CameraModel(bad)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_dataset_bag_dataset_round_trip(small_scene, tmp_path, storage):
    root, mem, _ = small_scene
    frames = PosedFrameFolder(root).frames(mem[:5])
    bag = str(tmp_path / 'bag')
    dataset_to_bag(frames, bag, storage=storage, compressed=False, progress=False)
    assert set(bag_topics(bag)) == {'/tf', '/ground_truth/pose', '/camera/camera_info',
                                    '/camera/image', '/camera/depth/image'}
    out = str(tmp_path / 'frames')
    summary = bag_to_dataset(bag, out, '/camera/image', '/camera/camera_info',
                             world_frame='map', camera_frame='camera_gt',
                             depth_topic='/camera/depth/image', progress=False)
    assert summary['frames'] == 5 and not any(summary['skipped'].values())
    back = PosedFrameFolder(out).frames(PosedFrameFolder(out).stems())
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a.load_color(), b.load_color())  # raw rgb8 is lossless
        np.testing.assert_allclose(a.load_depth(), b.load_depth(), atol=1e-3)
        t, r = pose_error(a.load_pose(), b.load_pose())
        assert t < 1e-6 and r < 1e-4
        np.testing.assert_allclose(a.K, b.K)
    # Odometry frame: odom -> camera differs from the ground truth by the map->odom offset.
    odom = [t for _, _, m in read_messages(bag, ['/tf']) for t in m.transforms
            if t.header.frame_id == 'odom']
    assert len(odom) == 5


def test_a_bag_without_depth_gives_frames_without_depth(small_scene, tmp_path, capsys):
    """No depth topic: no depth files (not all-zero ones); all-zero depth counts as none."""
    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc_training.memorize.memorize_scene import MemorizeConfig, read_frames
    root, mem, _ = small_scene
    bag = str(tmp_path / 'bag')
    dataset_to_bag(PosedFrameFolder(root).frames(mem[:3]), bag, compressed=False,
                   progress=False)
    out = str(tmp_path / 'frames')
    summary = bag_to_dataset(bag, out, '/camera/image', '/camera/camera_info',
                             world_frame='map', camera_frame='camera_gt', progress=False)
    assert summary['frames'] == 3
    assert not [n for n in os.listdir(out) if n.endswith('.depth.png')]
    back = PosedFrameFolder(out).frames(PosedFrameFolder(out).stems())
    assert all(f.load_depth() is None for f in back)
    # A folder whose depth images are all zero (as earlier bag-to-dataset wrote them).
    for f in back:
        cv2.imwrite(f.depth_path, np.zeros(f.load_color().shape[:2], np.uint16))
    ex = FeatureExtractor('handcrafted', None, 'cpu')
    # Treated as frames without depth: the region classifier triangulates (too few tracks in
    # three tiny frames, and it says so).
    with pytest.raises(ValueError, match='could be triangulated.*record'):
        read_frames(back, ex, MemorizeConfig(device='cpu'), progress=False)
    _, _, _, depths = read_frames(back, ex, MemorizeConfig(device='cpu',
                                                          head='landmark_detector'), False)
    assert depths == [None] * 3
    assert '3 depth image(s) hold no valid depth' in capsys.readouterr().err


def test_a_bag_missing_a_topic_is_a_clear_error(small_scene, tmp_path):
    root, mem, _ = small_scene
    bag = str(tmp_path / 'bag')
    dataset_to_bag(PosedFrameFolder(root).frames(mem[:2]), bag, progress=False)
    r = subprocess.run([SCRIPT, 'bag-to-dataset', '--bag', bag, '--out', str(tmp_path / 'o'),
                        '--image-topic', '/front/image', '--camera-info-topic',
                        '/camera/camera_info'], capture_output=True, text=True)
    assert r.returncode == 2
    assert 'no topic /front/image' in r.stderr and '/camera/image/compressed' in r.stderr


def test_replay_eval_cli_writes_metrics_report_and_estimates(small_scene, small_map, tmp_path):
    root, _, query = small_scene
    bag = str(tmp_path / 'bag')
    r = subprocess.run([SCRIPT, 'dataset-to-bag', '--data', root, '--frames',
                        os.path.join(root, 'query.txt'), '--out', bag, '--quiet', '--raw'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = str(tmp_path / 'replay')
    r = subprocess.run([SCRIPT, 'replay-eval', '--bag', bag, '--map', small_map[0], '--out', out,
                        '--device', 'cpu', '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m['n_queries'] == len(query) and m['recall_5cm_5deg'] >= 0.9
    assert os.path.exists(os.path.join(out, 'report', 'index.html'))
    est = os.path.join(out, 'estimates')
    assert os.path.isfile(os.path.join(est, 'estimates.mcap'))
    topics = bag_topics(est)
    assert {'/reloc/pose', '/tf', '/ground_truth/pose'} <= set(topics)
    n_est = sum(1 for _ in read_messages(est, ['/reloc/pose']))
    assert n_est == m['n_localized']
    # Again into the same folder: the old estimates bag is replaced, not nested or refused.
    r = subprocess.run([SCRIPT, 'replay-eval', '--bag', bag, '--map', small_map[0], '--out', out,
                        '--device', 'cpu', '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(est)) == ['estimates.mcap', 'metadata.yaml']

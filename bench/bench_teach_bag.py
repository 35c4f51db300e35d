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
Teaching from a robot's recording: real bags through bag-to-dataset, memorize, replay-eval.

Rows (both scene models, ALIKE-n, 2 CPU cores), each printed as a metrics JSON line:

* ``euroc``: EuRoC V1_01 cam0 written as a robot records it (``scene-reloc euroc-to-bag``:
  mono8, plumb_bob CameraInfo, /tf world->body from Vicon, /tf_static body->cam0), taught from
  the even images, the odd ones replayed. The 95 images of ../shared/data are the 4.7 s before
  take-off: the camera moves 2 mm, so nothing can be triangulated; the row records what
  memorize says.
* ``kitchen-robot``: the real 7-Scenes kitchen frames 0:700:2 made into the same kind of
  recording (grey, distorted with EuRoC cam0's coefficients, no depth, /tf world->body +
  /tf_static body->cam): keyframes of the even images taught, every odd image replayed.
* ``kitchen-robot perturbed``: the same keyframes with their poses perturbed by 3 cm / 1 deg
  (as SLAM poses are), memorized without and with ``--refine-poses`` (region classifier).
* ``tum``: TUM fr3 office, RGB only (even frames memorized, odd queried).
* ``refine``: TUM (motion-capture poses) and the SUN3D study room without its depth, even frames
  memorized with poses perturbed by 3 cm / 1 deg, without and with ``--refine-poses``: the
  memorized poses' error against the true ones, and the recall on the odd frames.
* ``kitchen dev-20 depth / rgb-only``: the same 20 frames with their depth and without.

  python bench/bench_teach_bag.py --data ../shared/data --weights ../shared/weights \
      --out out/teach_bag
"""

import argparse
import json
import os
import shutil
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from device_arg import add_device_argument, start_run  # noqa: E402

from scene_reloc.evaluation import compute_metrics, localize_frames  # noqa: E402
from scene_reloc.geometry import pose_error, rotvec_to_matrix  # noqa: E402
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402
from scene_reloc.scene_map import load_scene_map  # noqa: E402
from scene_reloc_training.data.bag_frames import bag_to_dataset, KeyframeRule  # noqa: E402
from scene_reloc_training.data.bags import (  # noqa: E402
    BagWriter,
    camera_info,
    raw_image,
    START_NS,
    T,
    transform_stamped,
)
from scene_reloc_training.data.euroc import euroc_to_bag, read_euroc_camera  # noqa: E402
from scene_reloc_training.data.replay import replay_eval  # noqa: E402
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig  # noqa: E402

HEADS = ('region_classifier', 'landmark_detector')
KEYS = ('n_queries', 'recall_5cm_5deg', 'median_translation_cm', 'median_rotation_deg',
        'covariance_nees_mean', 'seconds_per_query_p50', 'train_seconds', 'map_megabytes')


def distortion_maps(K, D, size):
    """Remap tables that turn a pinhole image into the view of a camera with distortion D."""
    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([u.ravel(), v.ravel()], 1)[:, None]
    und = cv2.undistortPoints(pts, K, D).reshape(-1, 2)      # normalized pinhole coordinates
    mx = (K[0, 0] * und[:, 0] + K[0, 2]).reshape(h, w).astype(np.float32)
    my = (K[1, 1] * und[:, 1] + K[1, 2]).reshape(h, w).astype(np.float32)
    return mx, my


def write_robot_bag(frames, out, D, body_from_cam, rate=15.0):
    """Write posed frames as a robot records them: grey, distorted, /tf world->body, no depth."""
    K = frames[0].K
    h, w = frames[0].load_color().shape[:2]
    mx, my = distortion_maps(K, D, (w, h))
    cam_from_body = np.linalg.inv(body_from_cam)
    bag = BagWriter(out)
    try:
        bag.write('/tf_static', T['tf2_msgs/msg/TFMessage'](transforms=[
            transform_stamped(START_NS, 'body', 'cam', body_from_cam)]), START_NS, static=True)
        for i, fr in enumerate(frames):
            ns = START_NS + int(round(i * 1e9 / rate))
            grey = cv2.cvtColor(fr.load_color(), cv2.COLOR_RGB2GRAY)
            img = cv2.remap(grey, mx, my, cv2.INTER_LINEAR)
            bag.write('/tf', T['tf2_msgs/msg/TFMessage'](transforms=[transform_stamped(
                ns, 'world', 'body', fr.load_pose() @ cam_from_body)]), ns)
            bag.write('/cam/camera_info', camera_info(ns, 'cam', K, w, h, d=D), ns)
            bag.write('/cam/image_raw', raw_image(ns, 'cam', img, 'mono8'), ns)
    finally:
        bag.close()


def emit(rows, name, metrics, **extra):
    row = {'row': name, **{k: metrics.get(k) for k in KEYS}, **extra}
    rows.append(row)
    print(json.dumps(row), flush=True)


def cfg_for(a, head, **kw):
    return MemorizeConfig(backbone='alike-n', backbone_weights=a.weights_file, device=a.device,
                          head=head, **kw)


def replay_metrics(bag, path, a, image_topic, info_topic, gt_frame):
    reloc = Relocalizer.from_file(path, device=a.device)
    records, _ = replay_eval(bag, reloc, image_topic=image_topic, info_topic=info_topic,
                             world_frame='world', gt_frame=gt_frame, every=2, offset=1,
                             progress=False)
    return compute_metrics(records)


def euroc_rows(a, rows):
    bag = os.path.join(a.out, 'euroc_bag')
    info = euroc_to_bag(os.path.join(a.data, 'euroc_v1_01_cam0'), bag, progress=False)
    frames_dir = os.path.join(a.out, 'euroc_even')
    rec = bag_to_dataset(bag, frames_dir, '/cam0/image_raw', '/cam0/camera_info',
                         world_frame='world', every=2, keyframes=KeyframeRule(0, 0, 0),
                         progress=False)
    folder = PosedFrameFolder(frames_dir)
    frames = folder.frames(folder.stems())
    centres = np.array([f.load_pose()[:3, 3] for f in frames])
    motion_cm = float(100 * np.ptp(centres, 0).max())
    for head in HEADS:
        try:
            memorize(frames, os.path.join(a.out, f'euroc-{head}.map'), cfg_for(a, head),
                     progress=False)
            outcome = 'memorized'
        except ValueError as e:
            outcome = f'refused: {e}'
        row = {'row': f'euroc | {head}', 'images': info['images'], 'taught': rec['frames'],
               'camera_motion_cm': round(motion_cm, 2), 'outcome': outcome}
        if outcome == 'memorized':
            row.update(replay_metrics(bag, os.path.join(a.out, f'euroc-{head}.map'), a,
                                      '/cam0/image_raw', '/cam0/camera_info', 'cam0'))
        rows.append(row)
        print(json.dumps(row), flush=True)


def kitchen_robot_rows(a, rows):
    kitchen = PosedFrameFolder(os.path.join(a.data, '7scenes_redkitchen_dev'))
    _, D, _, body_from_cam, _ = read_euroc_camera(os.path.join(a.data, 'euroc_v1_01_cam0'))
    bag = os.path.join(a.out, 'kitchen_robot_bag')
    t0 = time.perf_counter()
    write_robot_bag(kitchen.frames(parse_frame_list('0:700:2', kitchen)), bag, D,
                    body_from_cam)
    frames_dir = os.path.join(a.out, 'kitchen_robot_even')
    rec = bag_to_dataset(bag, frames_dir, '/cam/image_raw', '/cam/camera_info',
                         world_frame='world', every=2, progress=False)
    print(json.dumps({'row': 'kitchen-robot recording', 'images': rec['images'],
                      'keyframes': rec['frames'], 'skipped': rec['skipped'],
                      'seconds': round(time.perf_counter() - t0, 1)}), flush=True)
    folder = PosedFrameFolder(frames_dir)
    frames = folder.frames(folder.stems())
    for head in HEADS:
        path = os.path.join(a.out, f'kitchen-robot-{head}.map')
        s = memorize(frames, path, cfg_for(a, head), progress=False)
        m = replay_metrics(bag, path, a, '/cam/image_raw', '/cam/camera_info', 'cam')
        emit(rows, f'kitchen-robot | {head}', {**m, **s}, keyframes=len(frames))
    perturbed = perturbed_copy(frames_dir, os.path.join(a.out, 'kitchen_robot_perturbed'))
    refinement_rows(a, rows, 'kitchen-robot', perturbed.frames(perturbed.stems()),
                    [f.load_pose() for f in frames],
                    lambda path: replay_metrics(bag, path, a, '/cam/image_raw',
                                                '/cam/camera_info', 'cam'))


def perturbed_copy(src, dst, t_m=0.03, r_deg=1.0, seed=0, depth=True):
    """Copy a frame folder with every pose moved by ``t_m`` and turned by ``r_deg``."""
    rng = np.random.default_rng(seed)
    shutil.copytree(src, dst, ignore=None if depth else shutil.ignore_patterns('*.depth.png'))
    for name in sorted(os.listdir(dst)):
        if name.endswith('.pose.txt'):
            p = np.loadtxt(os.path.join(dst, name))
            d = rng.normal(size=3)
            axis = rng.normal(size=3)
            dT = np.eye(4)
            dT[:3, :3] = rotvec_to_matrix(np.radians(r_deg) * axis / np.linalg.norm(axis))
            dT[:3, 3] = t_m * d / np.linalg.norm(d)
            np.savetxt(os.path.join(dst, name), p @ dT)
    return PosedFrameFolder(dst)


def refined_poses(path, poses, frames):
    """Return the poses a map was memorized with (the input where refinement was refused)."""
    refined = load_scene_map(path)[0].get('refined_poses', {})
    return [np.array(refined[f.stem]) if f.stem in refined else p for f, p in zip(frames, poses)]


def pose_errors(poses, truth):
    """Median translation (cm) and rotation (deg) error of poses against the true ones."""
    e = np.array([pose_error(p, t) for p, t in zip(poses, truth)])
    return round(float(np.median(e[:, 0]) * 100), 2), round(float(np.median(e[:, 1])), 3)


def refine_rows(a, rows, name, src, mem, query):
    """Memorize ``mem`` with perturbed poses (no depth), without and with --refine-poses."""
    truth_folder = PosedFrameFolder(src)
    pert = perturbed_copy(src, os.path.join(a.out, f'{name}_perturbed'), depth=False)

    def score(path):
        reloc = Relocalizer.from_file(path, device=a.device)
        return compute_metrics(localize_frames(reloc.localize, truth_folder.frames(query)))
    refinement_rows(a, rows, name, pert.frames(mem),
                    [f.load_pose() for f in truth_folder.frames(mem)], score)


def refinement_rows(a, rows, name, pframes, truth, score):
    """Memorize perturbed frames without and with --refine-poses; ``score(map path)``."""
    print(json.dumps({'row': f'{name}: perturbed poses vs true (cm, deg)',
                      'error': pose_errors([f.load_pose() for f in pframes], truth)}))
    for refine in (False, True):
        path = os.path.join(a.out, f'{name}-perturbed-{int(refine)}.map')
        s = memorize(pframes, path, cfg_for(a, 'region_classifier', refine_poses=refine),
                     progress=False)
        poses = [f.load_pose() for f in pframes]
        if refine:
            poses = refined_poses(path, poses, pframes)
        emit(rows, f'{name} perturbed 3 cm / 1 deg | region_classifier'
             f'{" + refine-poses" if refine else ""}', {**score(path), **s},
             memorized_pose_error_cm_deg=pose_errors(poses, truth))


def folder_rows(a, rows, name, folder, mem, query, heads=HEADS):
    for head in heads:
        path = os.path.join(a.out, f'{name.replace(" ", "_")}-{head}.map')
        s = memorize(folder.frames(mem), path, cfg_for(a, head), progress=False)
        reloc = Relocalizer.from_file(path, device=a.device)
        m = compute_metrics(localize_frames(reloc.localize, folder.frames(query)))
        emit(rows, f'{name} | {head}', {**m, **s}, memorized=len(mem),
             triangulated_points=s.get('triangulated_points'))


def no_depth_copy(src, dst):
    """Link a folder's colour, pose and intrinsics files, leaving its depth out."""
    os.makedirs(dst, exist_ok=True)
    for n in os.listdir(src):
        if not n.endswith('.depth.png') and not os.path.exists(os.path.join(dst, n)):
            os.symlink(os.path.abspath(os.path.join(src, n)), os.path.join(dst, n))
    return PosedFrameFolder(dst)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default='../shared/data', help='the shared data folder')
    p.add_argument('--weights', default='../shared/weights', help='folder with alike-n.pth')
    p.add_argument('--out', default='out/teach_bag')
    p.add_argument('--rows', default='euroc,kitchen-robot,tum,refine,kitchen-dev20',
                   help='comma-separated rows to run')
    p.add_argument('--threads', type=int, default=2)
    add_device_argument(p)
    a = p.parse_args()
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    start_run(a)
    a.weights_file = os.path.join(a.weights, 'alike-n.pth')
    want = set(a.rows.split(','))
    rows = []
    t0 = time.perf_counter()
    if 'euroc' in want:
        euroc_rows(a, rows)
    if 'kitchen-robot' in want:
        kitchen_robot_rows(a, rows)
    if 'tum' in want:
        tum = PosedFrameFolder(os.path.join(a.data, 'tum_fr3_long_office_rgb'))
        stems = tum.stems()
        folder_rows(a, rows, 'tum rgb-only', tum, stems[0::2], stems[1::2])
    if 'refine' in want:
        tum = os.path.join(a.data, 'tum_fr3_long_office_rgb')
        stems = PosedFrameFolder(tum).stems()
        refine_rows(a, rows, 'tum', tum, stems[0::2], stems[1::2])
        room = os.path.join(a.data, 'sun3d_studyroom_f1')
        stems = PosedFrameFolder(room).stems()
        refine_rows(a, rows, 'studyroom', room, stems[0::2], stems[1::2])
    if 'kitchen-dev20' in want:
        src = os.path.join(a.data, '7scenes_redkitchen_dev')
        kitchen = PosedFrameFolder(src)
        mem, query = parse_frame_list('0:700:35', kitchen), parse_frame_list('15:700:10',
                                                                             kitchen)
        folder_rows(a, rows, 'kitchen dev-20 depth', kitchen, mem, query)
        rgb = no_depth_copy(src, os.path.join(a.out, 'kitchen_rgb_only'))
        folder_rows(a, rows, 'kitchen dev-20 rgb-only', rgb, mem, query)
    with open(os.path.join(a.out, 'rows.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    print(f'{len(rows)} rows in {time.perf_counter() - t0:.0f} s -> {a.out}/rows.json',
          file=sys.stderr)


if __name__ == '__main__':
    main()

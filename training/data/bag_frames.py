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
A robot's recording (images, CameraInfo, /tf from SLAM or odometry) to posed pinhole frames.

What ``bag-to-dataset`` (and ``teach``) run:

1. read the image, CameraInfo, optional depth and TF topics; check the CameraInfo with the
   node's own :class:`CameraModel` (the same undistortion the node applies to every query);
2. pose every image from /tf at its stamp (``world_frame <- camera``);
3. keep keyframes by motion (:class:`KeyframeRule`): a 20 Hz bag is mostly near-duplicates;
4. undistort the kept images (and depth, nearest-neighbour) to the pinhole K and write them with
   ``camera-intrinsics.txt`` and ``camera.json`` (the source CameraInfo, so that a map's
   intrinsics and the node's can never disagree silently).

The folder is written under a temporary name and renamed when complete: a failure leaves no
half-written frames, and an existing folder is never overwritten.
"""

from dataclasses import dataclass
import json
import os
import shutil

import cv2
import numpy as np
from tqdm import tqdm

from scene_reloc.geometry import pose_error
from scene_reloc.posed_frames import CAMERA_RECORD, write_frame
from scene_reloc.ros.conversions import CameraModel, InputError, stamp_to_ns
from scene_reloc.transform_buffer import TransformBuffer, TransformError
from scene_reloc_training.data.bags import bag_topics, decode_image, fill_tf, read_messages


class RecordingError(ValueError):
    """A recording that cannot be turned into posed frames, with what to record instead."""


@dataclass
class KeyframeRule:
    """Which posed images are memorized: enough motion since the last kept one, and a cap."""

    min_translation_m: float = 0.05
    """Keep an image once the camera moved this far since the last kept image..."""
    min_rotation_deg: float = 5.0
    """...or turned this much (0 and 0: keep every posed image)."""
    max_frames: int = 300
    """Keep at most this many, evenly spread over the ones that moved enough (0: no cap)."""


def select_keyframes(poses, rule):
    """
    Choose the poses to keep: the first always, then by motion, then capped.

    :return: (kept indices, number dropped by the motion rule, number dropped by the cap).
    """
    if not len(poses):
        return [], 0, 0
    kept = [0]
    for i in range(1, len(poses)):
        dt, dr = pose_error(poses[i], poses[kept[-1]])
        if dt >= rule.min_translation_m or dr >= rule.min_rotation_deg:
            kept.append(i)
    by_motion = len(poses) - len(kept)
    if rule.max_frames and len(kept) > rule.max_frames:
        pick = np.unique(np.round(np.linspace(0, len(kept) - 1, rule.max_frames)).astype(int))
        capped = len(kept) - len(pick)
        kept = [kept[i] for i in pick]
    else:
        capped = 0
    return kept, by_motion, capped


def _read_recording(bag, image_topic, info_topic, depth_topic):
    have = bag_topics(bag)
    topics = [image_topic, info_topic] + ([depth_topic] if depth_topic else [])
    missing = [t for t in topics if t not in have]
    if missing:
        raise RecordingError(f'{bag} has no topic {", ".join(missing)}; it has: '
                             f'{", ".join(sorted(have))}')
    if '/tf' not in have and '/tf_static' not in have:
        raise RecordingError(f'{bag} has no /tf or /tf_static: the images cannot be posed; '
                             'record /tf and /tf_static with the camera (SLAM or odometry)')
    topics += [t for t in ('/tf', '/tf_static') if t in have]
    buffer = TransformBuffer(cache_seconds=1e9)
    images, depths, infos = [], [], []
    for topic, _, msg in read_messages(bag, topics):
        if topic in ('/tf', '/tf_static'):
            fill_tf(buffer, msg, topic == '/tf_static')
        elif topic == info_topic:
            if not infos:
                infos.append(msg)
            elif not _same_calibration(msg, infos[0]):
                raise RecordingError(
                    f'the CameraInfo on {info_topic} changes during the recording (first '
                    f'{_describe_calibration(infos[0])}; later {_describe_calibration(msg)}): '
                    'split the bag where the camera was recalibrated or its mode changed, and '
                    'teach from one part')
        elif topic == image_topic:
            images.append(msg.header)   # headers only: a long recording need not fit in memory
        else:
            depths.append(stamp_to_ns(msg.header.stamp))
    if not infos:
        raise RecordingError(f'no CameraInfo message on {info_topic}: the images cannot be '
                             'used without the camera calibration; record the camera_info topic')
    if not images:
        raise RecordingError(f'no image on {image_topic}')
    return images, np.array(depths, dtype=np.int64), infos[0], buffer


def _fetch(bag, wanted):
    """Read the messages ``wanted`` = {topic: message indices on it} (a second pass)."""
    got, seen = {t: {} for t in wanted}, {t: -1 for t in wanted}
    for topic, _, msg in read_messages(bag, [t for t in wanted if wanted[t]]):
        seen[topic] += 1
        if seen[topic] in wanted[topic]:
            got[topic][seen[topic]] = msg
    return got


def _same_calibration(a, b):
    return ((a.width, a.height, a.distortion_model) == (b.width, b.height, b.distortion_model)
            and np.allclose(np.asarray(a.k, float), np.asarray(b.k, float), equal_nan=True)
            and np.asarray(a.d, float).shape == np.asarray(b.d, float).shape
            and np.allclose(np.asarray(a.d, float), np.asarray(b.d, float), equal_nan=True))


def _describe_calibration(info):
    k = np.asarray(info.k, float)
    return (f'{info.width}x{info.height}, fx {k[0]:g} fy {k[4]:g} cx {k[2]:g} cy {k[5]:g}, '
            f'{info.distortion_model or "no model"} D {np.round(np.asarray(info.d, float), 6)}')


def _camera_model(info, info_topic):
    try:
        return CameraModel(info)
    except InputError as e:
        raise RecordingError(f'the CameraInfo on {info_topic} cannot be used: {e}') from None


def _pose_images(images, buffer, world_frame, camera_frame, every):
    """Return ([(image index, stamp, pose)], count that TF could not pose) of image headers."""
    posed, failures = [], []
    for i in range(0, len(images), max(1, every)):
        ns = stamp_to_ns(images[i].stamp)
        frame = camera_frame or images[i].frame_id
        if ns == 0:     # TF reads time 0 as "the latest": it would pose every image the same
            failures.append('the image header has no stamp (0): the camera driver must stamp '
                            'its images with the capture time')
            continue
        try:
            posed.append((i, ns, buffer.lookup(world_frame, frame, ns)))
        except TransformError as e:
            failures.append(str(e))
    if not posed:
        frames = ', '.join(sorted(buffer.frames())) or 'none'
        raise RecordingError(
            f'none of the {len(failures)} images could be posed: /tf has no {world_frame} <- '
            f'{camera_frame or images[0].frame_id} at the image stamps (first: '
            f'{failures[0] if failures else "?"}). TF frames in the bag: {frames}. Pass '
            '--world-frame / --camera-frame, or record the SLAM / odometry TF with the images')
    return posed, len(failures)


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


def camera_record(camera, info, info_topic, image_size, K):
    """Describe the written images for ``camera.json``: their pinhole K and the source camera."""
    return {'format': 1, 'images': 'undistorted' if camera.distorted else 'pinhole',
            'width': int(image_size[0]), 'height': int(image_size[1]),
            'K': np.asarray(K, float).tolist(),
            'source': {'topic': info_topic, 'distortion_model': camera.model,
                       'd': camera.D.tolist(), 'k': np.asarray(info.k, float).tolist(),
                       'width': int(info.width), 'height': int(info.height)}}


def _refuse_existing(out):
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise RecordingError(f'{out} exists and is not empty; choose a new folder (nothing in '
                             'it is overwritten)')


def _staging_dir(out):
    _refuse_existing(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f'.{os.path.basename(os.path.abspath(out))}.partial-{os.getpid()}')
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def bag_to_dataset(bag, out, image_topic, info_topic, world_frame='map', camera_frame=None,
                   depth_topic=None, every=1, keyframes=KeyframeRule(), max_depth_gap_s=0.02,
                   progress=True):
    """
    Turn a robot recording into a folder of posed, undistorted frames for ``memorize``.

    Each image gets the pose ``world_frame <- camera`` from /tf at its stamp; images TF cannot
    pose (before it starts, extrapolation) are skipped and counted. Keyframes are then chosen
    by ``keyframes``; each kept image is undistorted with the recording's CameraInfo, with the
    depth image nearest in time (within ``max_depth_gap_s``) when ``depth_topic`` is given.

    :raises RecordingError: the recording cannot give posed frames (the message says why and
        what to record instead).
    :return: dict with the written folder, frame counts and the reasons of every skip.
    """
    _refuse_existing(out)    # before the bag is read, not after
    images, depth_ns, info, buffer = _read_recording(bag, image_topic, info_topic,
                                                     depth_topic)
    camera = _camera_model(info, info_topic)
    posed, no_pose = _pose_images(images, buffer, world_frame, camera_frame, every)
    keep, by_motion, capped = select_keyframes([p for _, _, p in posed], keyframes)
    skipped = {'no_pose': no_pose, 'not_keyframe': by_motion, 'over_max_frames': capped,
               'no_depth': 0, 'bad_image': 0}
    kept = []       # (image index, pose, depth index or None; -1: none close enough)
    for i, ns, pose in (posed[k] for k in keep):
        j = None    # no depth topic: no depth files (never an all-invalid fake)
        if depth_topic:
            j = int(np.argmin(np.abs(depth_ns - ns))) if len(depth_ns) else -1
            if j >= 0 and abs(depth_ns[j] - ns) > max_depth_gap_s * 1e9:
                j = -1
        kept.append((i, pose, j))
    # Second pass: only the kept images (and their depth) are ever decoded or held.
    got = _fetch(bag, {image_topic: {k[0] for k in kept},
                       **({depth_topic: {k[2] for k in kept if k[2] >= 0}}
                          if depth_topic else {})})
    first_error, K_out, size, stems = None, None, None, []
    tmp = _staging_dir(out)
    try:
        for i, pose, j in tqdm(kept, desc='writing frames', unit='frame',
                                disable=not progress):
            if j == -1:
                skipped['no_depth'] += 1
                continue
            try:
                rgb, K = camera.prepare(decode_image(got[image_topic][i]))
                depth_m = None if j is None else _depth_frame(camera, got[depth_topic][j],
                                                              rgb.shape)
            except InputError as e:
                skipped['bad_image'] += 1
                first_error = first_error or str(e)
                continue
            if K_out is None:
                K_out, size = K, (rgb.shape[1], rgb.shape[0])
            elif (rgb.shape[1], rgb.shape[0]) != size:
                skipped['bad_image'] += 1
                first_error = first_error or (f'image size changed mid-recording from '
                                              f'{size[0]}x{size[1]} to '
                                              f'{rgb.shape[1]}x{rgb.shape[0]}')
                continue
            stem = f'frame-{len(stems):06d}'
            write_frame(tmp, stem, rgb, depth_m, pose)
            stems.append(stem)
        if not stems:
            raise RecordingError(_nothing_written(skipped, first_error, image_topic,
                                                  depth_topic))
        _write_folder_files(tmp, bag, image_topic, world_frame, stems, K_out,
                            camera_record(camera, info, info_topic, size, K_out))
        if os.path.isdir(out):
            os.rmdir(out)   # empty (checked above)
        os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return {'out': out, 'frames': len(stems), 'images': len(images), 'skipped': skipped,
            'first_image_error': first_error, 'image_size': list(size),
            'undistorted': camera.distorted, 'distortion_model': camera.model,
            'keyframes': {'min_translation_m': keyframes.min_translation_m,
                          'min_rotation_deg': keyframes.min_rotation_deg,
                          'max_frames': keyframes.max_frames}}


def _depth_frame(camera, msg, shape):
    depth = _depth_to_m(msg)
    if depth.shape != shape[:2]:
        raise InputError(f'depth image {depth.shape[1]}x{depth.shape[0]} differs from the '
                         f'colour image {shape[1]}x{shape[0]}: register depth to colour '
                         '(e.g. aligned_depth_to_color)')
    return camera.prepare(depth, cv2.INTER_NEAREST)[0]


def _nothing_written(skipped, first_error, image_topic, depth_topic):
    if skipped['bad_image']:
        return f'no image on {image_topic} could be used: {first_error}'
    if skipped['no_depth']:
        return (f'no image had a depth image on {depth_topic} close enough in time; leave '
                'out --depth-topic to teach from colour only')
    return 'no frame was kept'


def _write_folder_files(root, bag, image_topic, world_frame, stems, K, record):
    np.savetxt(os.path.join(root, 'camera-intrinsics.txt'), K)
    with open(os.path.join(root, CAMERA_RECORD), 'w') as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(root, 'frames.txt'), 'w') as f:
        f.write(f'# from {bag} ({image_topic}, poses {world_frame} <- camera)\n')
        f.writelines(s + '\n' for s in stems)

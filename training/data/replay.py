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
Replay a bag through the localizer offline (deterministic) and compare with its ground truth.

Ground truth comes from a PoseStamped topic (``/ground_truth/pose`` by default) matched by
stamp, or else from /tf (``map -> <camera frame>_gt``, as ``dataset-to-bag`` writes it). The
estimated poses are written to an output bag (``/reloc/pose`` PoseWithCovarianceStamped, TF
``map -> <camera>_est``, plus the ground truth) that Foxglove or rviz can open.
"""

import os
import shutil

import numpy as np
from tqdm import tqdm

from scene_reloc.evaluation import compute_metrics, record_query
from scene_reloc.ros.conversions import (
    CameraModel,
    covariance_to_msg,
    InputError,
    stamp_to_ns,
    transform_to_matrix,
)
from scene_reloc.transform_buffer import TransformBuffer, TransformError
from scene_reloc_training.data.bags import (
    _header,
    bag_topics,
    BagWriter,
    decode_image,
    fill_tf,
    GT_SUFFIX,
    pose_stamped,
    read_messages,
    T,
    transform_stamped,
)


def _find(topics, candidates, what):
    for c in candidates:
        if c in topics:
            return c
    raise ValueError(f'no {what} topic found (tried {", ".join(candidates)}); pass it '
                     f'explicitly. The bag has: {", ".join(sorted(topics))}')


def replay_eval(bag, reloc, out_bag=None, image_topic=None, info_topic=None,
                gt_topic='/ground_truth/pose', world_frame='map', gt_frame=None, every=1,
                offset=0, progress=True):
    """
    Localize every image of ``bag`` with ``reloc`` (a :class:`Relocalizer`).

    :param gt_frame: take the ground truth from /tf as ``world_frame <- gt_frame`` (e.g. the
        camera frame of a recording whose /tf is motion capture); default: ``gt_topic``, else
        ``<image frame_id>_gt`` as ``dataset-to-bag`` writes it.
    :param every: replay every N-th image only, from the ``offset``-th (e.g. 2 and 1: the odd
        images of a bag whose even ones were memorized with ``bag-to-dataset --every 2``).

    :return: (records for :func:`compute_metrics`, per-query dicts with stamps).
    """
    topics = bag_topics(bag)
    image_topic = image_topic or _find(
        topics, ('/camera/image/compressed', '/camera/image', '/image', '/image/compressed',
                 '/camera/color/image_raw', '/camera/color/image_raw/compressed'), 'image')
    info_topic = info_topic or _find(
        topics, ('/camera/camera_info', '/camera_info', '/camera/color/camera_info'),
        'camera_info')
    use_gt_topic = gt_frame is None and gt_topic in topics
    wanted = [image_topic, info_topic] + ([gt_topic] if use_gt_topic else [])
    wanted += [t for t in ('/tf', '/tf_static') if t in topics]
    if not use_gt_topic and '/tf' not in topics:
        raise ValueError(f'{bag} has neither {gt_topic} nor /tf: no ground truth to compare '
                         'with')
    gt, tf_buffer, camera, images = {}, TransformBuffer(cache_seconds=1e6), None, []
    for topic, _, msg in read_messages(bag, wanted):
        if topic == gt_topic:
            gt[stamp_to_ns(msg.header.stamp)] = transform_to_matrix(msg.pose)
        elif topic in ('/tf', '/tf_static'):
            fill_tf(tf_buffer, msg, topic == '/tf_static')
        elif topic == info_topic and camera is None:
            camera = CameraModel(msg)
        elif topic == image_topic:
            images.append(msg)
    if camera is None:
        raise ValueError(f'no CameraInfo on {info_topic}')
    images = images[offset::max(1, every)]
    writer = BagWriter(out_bag) if out_bag else None
    records, rows = [], []
    try:
        for msg in tqdm(images, desc='replaying', unit='image', disable=not progress):
            ns = stamp_to_ns(msg.header.stamp)
            true = gt.get(ns)
            if true is None:
                try:
                    true = tf_buffer.lookup(world_frame,
                                            gt_frame or msg.header.frame_id + GT_SUFFIX, ns)
                except TransformError:
                    continue  # no ground truth for this image: not scored
            try:
                image, K = camera.prepare(decode_image(msg))
            except InputError:
                image, K = np.zeros((1, 1), np.uint8), camera.K  # scored as bad input
            res = reloc.localize(image, K)
            records.append(record_query(str(ns), res, true))
            rows.append({'stamp_ns': ns, 'success': res.success, 'reason': res.reason,
                         'inliers': res.num_inliers, 'seconds': res.seconds})
            if writer is not None:
                writer.write('/ground_truth/pose', pose_stamped(ns, world_frame, true), ns)
                if res.success:
                    _write_estimate(writer, ns, world_frame, msg.header.frame_id, res)
    finally:
        if writer is not None:
            writer.close()
    return records, rows


def _write_estimate(writer, ns, world_frame, camera_frame, res):
    est = pose_stamped(ns, world_frame, res.world_from_cam).pose
    msg = T['geometry_msgs/msg/PoseWithCovarianceStamped'](
        header=_header(ns, world_frame), pose=T['geometry_msgs/msg/PoseWithCovariance'](
            pose=est, covariance=np.array(covariance_to_msg(res.covariance))))
    writer.write('/reloc/pose', msg, ns)
    writer.write('/tf', T['tf2_msgs/msg/TFMessage'](transforms=[
        transform_stamped(ns, world_frame, camera_frame + '_est', res.world_from_cam)]), ns)


def run(bag, map_path, out_dir, backbone_weights=None, device='auto', progress=True, **kw):
    """
    Replay, write metrics.json, the report and the ``estimates`` bag under ``out_dir``.

    The estimates are a rosbag2 folder (``estimates/estimates.mcap`` + ``metadata.yaml``):
    ``ros2 bag play`` takes the folder, Foxglove opens the ``.mcap`` inside it.
    """
    import json

    from scene_reloc.report import write_report
    from scene_reloc.site import open_localizer
    os.makedirs(out_dir, exist_ok=True)
    reloc = open_localizer(map_path, backbone_weights, device)   # a map or a site
    out_bag = os.path.join(out_dir, 'estimates')
    if os.path.isdir(out_bag):
        shutil.rmtree(out_bag)
    elif os.path.exists(out_bag):
        raise FileExistsError(f'{out_bag} is a file, not an estimates bag; move it away')
    records, _ = replay_eval(bag, reloc, out_bag, progress=progress, **kw)
    if not records:
        raise ValueError(f'no image in {bag} had ground truth to compare with')
    metrics = compute_metrics(records, map_megabytes=round(os.path.getsize(map_path) / 1e6, 3))
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=2)
    index = write_report(records, metrics, os.path.join(out_dir, 'report'),
                         title=f'replay of {os.path.basename(os.path.normpath(bag))}')
    return metrics, index, out_bag

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
Our bag readers, transform buffer and image decoding on real ROS 2 bags (not needed by tests).

* ``nav2_turtlebot.mcap``: every ``/amcl_pose`` (base pose in map, from AMCL) is compared with
  ``map -> base`` looked up in our buffer filled from the bag's /tf and /tf_static (AMCL's
  map->odom composed with odometry): the two must agree, which checks interpolation and chains.
* ``tf_example``: every frame looked up against the root across the recording.
* ``t265_ros2``: the fisheye images decoded; ``bag-to-dataset`` must refuse it with a clear
  message (it has no /tf and no CameraInfo).

  python bench/check_real_bags.py --bags ../shared/data/bags
"""

import argparse
from collections import Counter
import json
import os

import numpy as np

from scene_reloc.geometry import pose_error
from scene_reloc.ros.conversions import image_to_rgb, stamp_to_ns, transform_to_matrix
from scene_reloc.transform_buffer import TransformBuffer, TransformError
from scene_reloc_training.data.bag_frames import bag_to_dataset
from scene_reloc_training.data.bags import bag_topics, fill_tf, read_messages


def load(path):
    topics = bag_topics(path)
    counts, msgs = Counter(), []
    for topic, ns, msg in read_messages(path, list(topics)):
        counts[topic] += 1
        msgs.append((topic, ns, msg))
    return topics, counts, msgs


def tf_buffer(msgs):
    buf = TransformBuffer(cache_seconds=1e6)
    for topic, _, msg in msgs:
        if topic in ('/tf', '/tf_static'):
            fill_tf(buf, msg, topic == '/tf_static')
    return buf


def check_nav2(path):
    _, counts, msgs = load(path)
    buf = tf_buffer(msgs)
    # AMCL post-dates map->odom by its transform_tolerance: find that offset in the data, then
    # compose map->odom at (scan stamp + offset) with odom->base at the scan stamp.
    m2o = np.array(sorted(stamp_to_ns(t.header.stamp) for topic, _, m in msgs if topic == '/tf'
                          for t in m.transforms if t.child_frame_id == 'odom'))
    amcl = [m for topic, _, m in msgs if topic == '/amcl_pose']
    gaps = [m2o[np.searchsorted(m2o, stamp_to_ns(m.header.stamp))] - stamp_to_ns(m.header.stamp)
            for m in amcl if np.searchsorted(m2o, stamp_to_ns(m.header.stamp)) < len(m2o)]
    offset = int(np.median(gaps)) if gaps else 0
    errs, fails = [], Counter()
    for msg in amcl:
        ns = stamp_to_ns(msg.header.stamp)
        try:
            T = buf.lookup(msg.header.frame_id, 'odom', ns + offset) @ \
                buf.lookup('odom', 'base_footprint', ns)
        except TransformError as e:
            fails[type(e).__name__] += 1
            continue
        errs.append(pose_error(T, transform_to_matrix(msg.pose.pose)))
    e = np.array(errs)
    # Odometry messages against the odom -> base TF from the same driver, at the same stamps.
    odo = []
    for topic, _, m in msgs:
        if topic == '/odom':
            try:
                T = buf.lookup(m.header.frame_id, m.child_frame_id, stamp_to_ns(m.header.stamp))
            except TransformError:
                continue
            odo.append(pose_error(T, transform_to_matrix(m.pose.pose))[0])
    return {'bag': os.path.basename(path), 'messages': dict(counts), 'frames': len(buf.frames()),
            'odom_msgs_checked': len(odo),
            'odom_vs_tf_median_mm': round(float(np.median(odo)) * 1000, 4) if odo else None,
            'odom_vs_tf_max_mm': round(float(np.max(odo)) * 1000, 4) if odo else None,
            'amcl_post_dating_s': round(offset * 1e-9, 3),
            'amcl_poses_checked': len(errs), 'lookup_failures': dict(fails),
            'amcl_vs_tf_median_cm': round(float(np.median(e[:, 0]) * 100), 4) if len(e) else None,
            'amcl_vs_tf_max_cm': round(float(e[:, 0].max() * 100), 4) if len(e) else None,
            'amcl_vs_tf_median_deg': round(float(np.median(e[:, 1])), 4) if len(e) else None}


def check_tf_example(path):
    _, counts, msgs = load(path)
    buf = tf_buffer(msgs)
    stamps = sorted(stamp_to_ns(t.header.stamp) for topic, _, m in msgs if topic == '/tf'
                    for t in m.transforms)
    frames = buf.frames()
    ok, fails = 0, Counter()
    for ns in stamps[len(stamps) // 10::max(1, len(stamps) // 50)]:
        for f in frames[1:]:
            try:
                buf.lookup(frames[0], f, ns)
                ok += 1
            except TransformError as e:
                fails[type(e).__name__] += 1
    return {'bag': os.path.basename(path), 'messages': dict(counts), 'frames': frames,
            'lookups_ok': ok, 'lookup_failures': dict(fails)}


def check_t265(path, tmp):
    topics, counts, msgs = load(path)
    shapes = Counter()
    for topic, _, msg in msgs:
        if topics[topic] == 'sensor_msgs/msg/Image':
            img = image_to_rgb(msg)
            shapes[f'{topic} {img.shape[1]}x{img.shape[0]}'] += 1
    try:
        bag_to_dataset(path, tmp, '/camera/fisheye1/image_raw', '/camera/camera_info',
                       progress=False)
        refusal = None
    except ValueError as e:
        refusal = str(e)
    return {'bag': os.path.basename(path), 'messages': dict(counts), 'decoded': dict(shapes),
            'bag_to_dataset_refusal': refusal}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--bags', required=True, help='folder with the real bags')
    p.add_argument('--tmp', default='out/check-bags', help='scratch folder')
    a = p.parse_args()
    print(json.dumps(check_nav2(os.path.join(a.bags, 'nav2_turtlebot.mcap'))))
    print(json.dumps(check_tf_example(os.path.join(a.bags, 'tf_example'))))
    print(json.dumps(check_t265(os.path.join(a.bags, 't265_ros2'), a.tmp)))


if __name__ == '__main__':
    main()

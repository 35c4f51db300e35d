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
The demo: synthetic scene -> memorize -> evaluate -> bag -> the ROS node -> poses -> replay report.

1. render a synthetic room, memorize 20 frames, localize 50 held-out frames, write a report;
2. a site: a second room memorized too, one site over both maps, queries from both rooms and
   from a third room in neither: which map each query is placed in, or none;
3. the robot loop: write the held-out frames as a ROS 2 bag, start the node (as the launch file
   does), play the bag into it over DDS, record the poses it publishes, compare them with the
   ground truth; then replay the bag offline (``replay-eval``) for its report and MCAP.

Needs no data and no weights (the handcrafted backbone). Run with ``make demo``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from scene_reloc_training.cli import main as cli


def run(args):
    print(f'$ scene-reloc {" ".join(args)}', flush=True)
    if cli(args) != 0:
        sys.exit(f'demo step failed: scene-reloc {args[0]}')


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--out', default='out/demo', help='where the scene, map and report go')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-ros', action='store_true', help='skip the node / bag part')
    a = p.parse_args()
    scene, scene_map = os.path.join(a.out, 'scene'), os.path.join(a.out, 'scene.map')
    report, metrics = os.path.join(a.out, 'report'), os.path.join(a.out, 'metrics.json')
    t0 = time.time()
    run(['make-synthetic', '--out', scene, '--seed', str(a.seed), '--memorize', '20',
         '--query', '50', '--query-lighting'])
    run(['memorize', '--data', scene, '--frames', os.path.join(scene, 'memorize.txt'),
         '--out', scene_map])
    run(['evaluate', '--map', scene_map, '--data', scene, '--frames',
         os.path.join(scene, 'query.txt'), '--json', metrics, '--report', report])
    m = json.load(open(metrics))
    print(f'\nmemorized and evaluated in {time.time() - t0:.0f} s: {m["n_localized"]}/'
          f'{m["n_queries"]} localized, median {m["median_translation_cm"]} cm / '
          f'{m["median_rotation_deg"]} deg, '
          f'recall 5 cm/5 deg {m["recall_5cm_5deg"]:.0%}, {m["seconds_per_query_p50"]} s per '
          f'query, map {m["map_megabytes"]} MB')
    print(f'report: {os.path.abspath(os.path.join(report, "index.html"))} (plots in '
          f'{os.path.abspath(os.path.join(report, "report.png"))})')
    site_demo(a.out, a.seed, scene, scene_map)
    if a.no_ros:
        return
    bag = os.path.join(a.out, 'query_bag')
    if os.path.exists(bag):
        import shutil
        shutil.rmtree(bag)
    run(['dataset-to-bag', '--data', scene, '--frames', os.path.join(scene, 'query.txt'),
         '--out', bag, '--rate', '5', '--quiet'])
    robot_loop(scene_map, bag, os.path.join(a.out, 'node_poses.csv'))
    replay = os.path.join(a.out, 'replay')
    run(['replay-eval', '--bag', bag, '--map', scene_map, '--out', replay, '--quiet'])
    est = os.path.abspath(os.path.join(replay, 'estimates', 'estimates.mcap'))
    print(f'replay report: {os.path.abspath(os.path.join(replay, "report", "index.html"))}; '
          f'estimates for Foxglove/rviz: {est}')


def site_demo(out, seed, scene, scene_map):
    """Two memorized rooms in one site; queries from both and from a room in neither."""
    rooms = {'room-b': os.path.join(out, 'room-b'), 'room-c': os.path.join(out, 'room-c')}
    for i, root in enumerate(rooms.values()):
        run(['make-synthetic', '--out', root, '--seed', str(seed + 1 + i), '--memorize', '20',
             '--query', '20', '--query-lighting'])
    second = os.path.join(out, 'room-b.map')
    run(['memorize', '--data', rooms['room-b'], '--frames',
         os.path.join(rooms['room-b'], 'memorize.txt'), '--out', second, '--quiet'])
    site = os.path.join(out, 'rooms.site')
    run(['site', '--maps', scene_map, second, '--out', site])
    lines = []
    for root, expect in ((scene, 'scene'), (rooms['room-b'], 'room-b'), (rooms['room-c'], '')):
        result = os.path.join(out, f'site-{expect or "none"}.json')
        run(['evaluate', '--map', site, '--data', root, '--frames',
             os.path.join(root, 'query.txt'), '--expect-map', expect, '--json', result,
             '--quiet'])
        m = json.load(open(result))
        lines.append(f'  queries from {os.path.basename(root)} (expected: {expect or "none"}): '
                     f'{m["map_selection"]}, right {m["map_selection_accuracy"]:.0%}'
                     + (f', false accepts {m["false_accepts"]}' if not expect else
                        f', recall 5 cm/5 deg {m["recall_5cm_5deg"]:.0%}'))
    print('\nsite of two maps (scene, room-b); room-c is in neither:\n' + '\n'.join(lines))


def robot_loop(scene_map, bag, csv_path):
    """Run the node in its own process, play the bag from another, record the poses here."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    import rclpy

    from scene_reloc.geometry import pose_error
    from scene_reloc.ros.conversions import stamp_to_ns, transform_to_matrix
    from scene_reloc_training.data.bags import read_messages
    gt = {stamp_to_ns(m.header.stamp): transform_to_matrix(m.pose)
          for _, _, m in read_messages(bag, ['/ground_truth/pose'])}
    env = dict(os.environ, ROS_DOMAIN_ID=str(os.environ.get('ROS_DOMAIN_ID', 17)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = [sys.executable, '-m', 'scene_reloc.ros.reloc_node', '--ros-args', '--params-file',
            os.path.join(root, 'config', 'reloc.yaml'), '-p', f'scene_map:={scene_map}',
            '-p', 'image_transport:=compressed', '-r', '/tf:=tf', '-r', '/tf_static:=tf_static',
            '-r', 'image/compressed:=/camera/image/compressed',
            '-r', 'camera_info:=/camera/camera_info']
    print(f'$ {" ".join(args[1:])} &', flush=True)
    node = subprocess.Popen(args, env=env)
    os.environ.update(env)
    rclpy.init()
    lst = rclpy.create_node('demo_recorder')
    poses = []
    lst.create_subscription(PoseWithCovarianceStamped, '/reloc_node/pose', poses.append, 10)
    counts = {}
    lst.create_subscription(DiagnosticArray, '/diagnostics', lambda m: counts.update(
        {kv.key: kv.value for st in m.status for kv in st.values}), 10)
    try:
        print(f'$ scene-reloc play --bag {bag} --wait 60', flush=True)
        play = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'scene-reloc'),
                                 'play', '--bag', bag, '--wait', '60'], env=env,
                                stdout=subprocess.DEVNULL)
        while play.poll() is None:
            rclpy.spin_once(lst, timeout_sec=0.1)
        end = time.time() + 3
        while time.time() < end:
            rclpy.spin_once(lst, timeout_sec=0.1)
    finally:
        accounting = _accounting(counts, len(gt))
        node.send_signal(2)
        node.wait(20)
        lst.destroy_node()
        rclpy.try_shutdown()
    errs = []
    with open(csv_path, 'w') as f:
        f.write('stamp_ns,x,y,z,qx,qy,qz,qw,error_cm,error_deg\n')
        for m in poses:
            ns, p = stamp_to_ns(m.header.stamp), m.pose.pose
            t, r = pose_error(transform_to_matrix(p), gt[ns]) if ns in gt else (np.nan, np.nan)
            errs.append((t, r))
            f.write(f'{ns},{p.position.x},{p.position.y},{p.position.z},{p.orientation.x},'
                    f'{p.orientation.y},{p.orientation.z},{p.orientation.w},{t * 100:.3f},'
                    f'{r:.3f}\n')
    e = np.array(errs) if errs else np.full((1, 2), np.nan)
    print(f'\nrobot loop: the node published {len(poses)} poses for {len(gt)} images over DDS, '
          f'median {np.nanmedian(e[:, 0]) * 100:.2f} cm / {np.nanmedian(e[:, 1]):.2f} deg '
          f'from the ground truth; recorded in {os.path.abspath(csv_path)}')
    print(accounting)


def _accounting(c, sent):
    """Say where every image went, from the node's own counters on /diagnostics."""
    if 'received' not in c:
        return 'the node published no diagnostics: no accounting'
    n = {k: int(c.get(k, 0)) for k in ('received', 'localized', 'rejected', 'dropped_frames',
                                       'bad_input', 'rate_limited', 'failed')}
    return (f'  of {sent} images sent: {n["received"]} reached the node, {n["localized"]} '
            f'localized, {n["dropped_frames"]} dropped by the keep-latest worker (busy with a '
            f'newer frame), {n["rejected"]} rejected with a reason on /diagnostics, '
            f'{n["bad_input"]} bad input, {n["rate_limited"]} rate-limited, {n["failed"]} '
            f'failed')


if __name__ == '__main__':
    main()

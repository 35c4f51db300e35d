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
The node under a live camera: 640x480 rgb8 images at 30 Hz over DDS, for minutes.

Three processes: the node (started as the launch file starts it), a camera that publishes
``image``, ``camera_info`` and ``odom -> camera`` on /tf at the image stamps (its images are the
query frames of a synthetic scene, round robin), and this one, which listens to ``~/pose`` and
/diagnostics and samples the node's CPU time and resident memory from /proc.

Prints the metrics JSON: end-to-end latency image stamp -> pose received (p50/p95), received,
processed and dropped frame rates, the node's CPU (% of one core) and memory at the start and
end (it must not grow).

  python bench/bench_node.py --duration 300          # makes and memorizes a synthetic scene
  python bench/bench_node.py --map M --data D --frames LIST [--param runtime:=onnxruntime]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from device_arg import add_device_argument, checked_device
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def camera(data, frames, rate, duration):
    """Play the camera: publish images + CameraInfo + odom->camera at ``rate`` Hz."""
    from array import array

    import rclpy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc.ros.messages import tf_msg
    folder = PosedFrameFolder(data)
    fr = folder.frames(parse_frame_list(frames, folder))
    rclpy.init()
    node = rclpy.create_node('bench_camera')
    pub_img = node.create_publisher(Image, 'image', 10)
    pub_info = node.create_publisher(CameraInfo, 'camera_info', 10)
    pub_tf = node.create_publisher(TFMessage, '/tf', 100)
    imgs = []
    for f in fr:
        rgb = f.load_color()
        m = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                  step=rgb.shape[1] * 3)
        m.data = array('B', rgb.tobytes())  # fast path (a bytes object is checked per element)
        m.header.frame_id = 'camera'
        info = CameraInfo(height=rgb.shape[0], width=rgb.shape[1], distortion_model='plumb_bob')
        info.k = [float(v) for v in f.K.ravel()]
        info.header.frame_id = 'camera'
        imgs.append((m, info, f.load_pose()))
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < duration:
        m, info, pose = imgs[i % len(imgs)]
        stamp = node.get_clock().now().to_msg()
        m.header.stamp = info.header.stamp = stamp
        pub_tf.publish(tf_msg(stamp, 'odom', 'camera', pose))
        pub_info.publish(info)
        pub_img.publish(m)
        i += 1
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    node.destroy_node()
    rclpy.try_shutdown()


def proc_sample(pid):
    """(cpu seconds, resident MB) of a process, from /proc."""
    with open(f'/proc/{pid}/stat') as f:
        parts = f.read().rsplit(')', 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / os.sysconf('SC_CLK_TCK')
    with open(f'/proc/{pid}/status') as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith('VmRSS'))
    return cpu, rss / 1024


def start_node(scene_map, domain_id, params=(), device='cpu'):
    """Start the node as the launch file does on a fresh domain; return (env, process)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               FASTDDS_BUILTIN_TRANSPORTS=os.environ.get('FASTDDS_BUILTIN_TRANSPORTS',
                                                         'LARGE_DATA'))
    os.environ.update(env)
    args = [sys.executable, '-m', 'scene_reloc.ros.reloc_node', '--ros-args', '--params-file',
            os.path.join(ROOT, 'config', 'reloc.yaml'), '-p', f'scene_map:={scene_map}', '-p',
            f'device:={device}', '-r', '/tf:=tf', '-r', '/tf_static:=tf_static']
    for p in params:
        args += ['-p', p]
    return env, subprocess.Popen(args, env=env)


def make_scene(work):
    from scene_reloc_training.cli import main as cli
    scene, path = os.path.join(work, 'scene'), os.path.join(work, 'scene.map')
    cli(['make-synthetic', '--out', scene, '--seed', '0', '--memorize', '20', '--query', '30'])
    cli(['memorize', '--data', scene, '--frames', os.path.join(scene, 'memorize.txt'),
         '--out', path, '--device', 'cpu', '--quiet'])
    return path, scene, os.path.join(scene, 'query.txt')


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--map', help='scene map (default: memorize a synthetic scene first)')
    p.add_argument('--data', help='posed folder with the images to publish')
    p.add_argument('--frames', help='frame list of the images to publish')
    p.add_argument('--duration', type=float, default=300.0, help='seconds of camera stream')
    p.add_argument('--rate', type=float, default=30.0, help='camera frame rate (Hz)')
    p.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                   help="a node parameter, as ros2 run's -p takes it (repeatable), e.g. "
                   'runtime:=onnxruntime')
    add_device_argument(p)
    p.add_argument('--camera', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.camera:
        return camera(a.data, a.frames, a.rate, a.duration)

    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    import rclpy
    if not a.map:
        a.map, a.data, a.frames = make_scene(tempfile.mkdtemp(prefix='bench-node-'))
    env, node = start_node(a.map, 60 + os.getpid() % 30, a.param,
                           device=checked_device(a.device))
    rclpy.init(args=[])    # this script's own options are not ROS arguments
    lst = rclpy.create_node('bench_listener')
    latencies, diags = [], []

    def on_pose(m):
        now = lst.get_clock().now().nanoseconds
        latencies.append((now - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) * 1e-9)

    lst.create_subscription(PoseWithCovarianceStamped, '/reloc_node/pose', on_pose, 10)
    lst.create_subscription(DiagnosticArray, '/diagnostics',
                            lambda m: diags.append({kv.key: kv.value for s in m.status
                                                    for kv in s.values}), 10)
    deadline = time.time() + 120
    while time.time() < deadline and not any(d.get('state') == 'active, waiting for images'
                                             for d in diags):
        rclpy.spin_once(lst, timeout_sec=0.1)
    cam = subprocess.Popen([sys.executable, __file__, '--camera', '--data', a.data, '--frames',
                            a.frames, '--rate', str(a.rate), '--duration', str(a.duration)],
                           env=env)
    samples, t_start = [], time.time()
    next_sample = t_start + 10
    while cam.poll() is None:
        rclpy.spin_once(lst, timeout_sec=0.05)
        if time.time() >= next_sample:
            samples.append((time.time(), *proc_sample(node.pid)))
            next_sample += 10
    t_end = time.time()
    end = time.time() + 3
    while time.time() < end:
        rclpy.spin_once(lst, timeout_sec=0.05)
    last = diags[-1] if diags else {}
    node.send_signal(2)
    node.wait(20)
    lst.destroy_node()
    rclpy.try_shutdown()
    span = t_end - t_start
    (t0, c0, m0), (t1, c1, m1) = samples[0], samples[-1]
    lat = np.array(latencies)
    metrics = {
        'duration_s': round(span, 1), 'camera_rate_hz': a.rate,
        'latency_s_p50': round(float(np.percentile(lat, 50)), 4) if len(lat) else None,
        'latency_s_p95': round(float(np.percentile(lat, 95)), 4) if len(lat) else None,
        'poses_hz': round(len(lat) / span, 2),
        'received_hz': round(int(last.get('received', 0)) / span, 2),
        'processed_hz': round(int(last.get('processed_frames', 0)) / span, 2),
        'dropped_hz': round(int(last.get('dropped_frames', 0)) / span, 2),
        'node_cpu_percent_of_one_core': round(100 * (c1 - c0) / (t1 - t0), 1),
        'node_rss_mb_first_sample': round(m0, 1), 'node_rss_mb_last_sample': round(m1, 1),
        'node_rss_mb_max': round(max(s[2] for s in samples), 1),
    }
    print(json.dumps(metrics, indent=2))


if __name__ == '__main__':
    main()

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

"""Helpers for the DDS tests: start the node as the launch file would, listen to its outputs."""

import os
import subprocess
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from tf2_msgs.msg import TFMessage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS = os.path.join(ROOT, 'config', 'reloc.yaml')
# The simulated odometry's offset in the query bags: map->odom must come out as this.
MAP_FROM_ODOM = np.array([[np.cos(0.3), -np.sin(0.3), 0, 0.5], [np.sin(0.3), np.cos(0.3), 0, -0.2],
                          [0, 0, 1, 0], [0, 0, 0, 1]])


def write_query_bag(scene, path):
    """Write a scene's query frames as a 10 Hz bag; return (path, {stamp_ns: pose})."""
    from scene_reloc.posed_frames import PosedFrameFolder
    from scene_reloc_training.data.bags import dataset_to_bag
    root, _, query = scene
    frames = PosedFrameFolder(root).frames(query)
    stamps = dataset_to_bag(frames, path, rate=10.0, map_from_odom=MAP_FROM_ODOM,
                            progress=False)
    return path, {ns: fr.load_pose() for (ns, _), fr in zip(stamps, frames)}


def ros_env(domain_id):
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONUNBUFFERED='1')
    return env


def start_node(env, params, log_path, remaps=()):
    """Start the node with the arguments launch/reloc.launch.py gives it (params, remaps)."""
    args = [sys.executable, '-m', 'scene_reloc.ros.reloc_node', '--ros-args',
            '--params-file', PARAMS, '-r', '/tf:=tf', '-r', '/tf_static:=tf_static']
    for k, v in params.items():
        args += ['-p', f'{k}:={v}']
    for a, b in remaps:
        args += ['-r', f'{a}:={b}']
    log = open(log_path, 'w')
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Listener:
    """An rclpy node in this process, spinning in a thread, recording what it hears."""

    def __init__(self, domain_id):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('test_listener', context=self.context)
        self.lock = threading.RLock()
        self.poses, self.tfs, self.diags = [], [], []
        self.node.create_subscription(PoseWithCovarianceStamped, '/reloc_node/pose',
                                      lambda m: self._add(self.poses, m), 10)
        self.node.create_subscription(TFMessage, '/tf', lambda m: self._add(self.tfs, m), 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      lambda m: self._add(self.diags, m), 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _add(self, bucket, msg):
        with self.lock:
            bucket.append(msg)

    def diag_messages(self):
        with self.lock:
            return [s.message for d in self.diags for s in d.status]

    def wait_for(self, predicate, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.05)
        return False

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

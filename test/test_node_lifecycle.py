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

"""The lifecycle up-down loop (as Nav2's test): nothing leaks from cycle to cycle."""

import gc
import os
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from scene_reloc.ros.reloc_node import RelocNode

DOMAIN = 200 + os.getpid() % 30


def test_configure_activate_deactivate_cleanup_cycles_leak_nothing(small_map):
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    node = RelocNode(context=ctx, parameter_overrides=[
        Parameter('scene_map', Parameter.Type.STRING, small_map[0]),
        Parameter('device', Parameter.Type.STRING, 'cpu'),
        Parameter('autostart', Parameter.Type.BOOL, False)])
    exe = SingleThreadedExecutor(context=ctx)
    exe.add_node(node)
    spin = threading.Thread(target=exe.spin, daemon=True)
    spin.start()

    def census():
        gc.collect()
        return (threading.active_count(), *(len(list(getattr(node, kind))) for kind in (
            'subscriptions', 'publishers', 'timers', 'services', 'clients')))

    counts = []
    try:
        for _ in range(12):
            results = [step() for step in (node.trigger_configure, node.trigger_activate,
                                           node.trigger_deactivate, node.trigger_cleanup)]
            assert all(r == TransitionCallbackReturn.SUCCESS for r in results), results
            assert node.reloc is None and node.worker is None and not node._subs
            counts.append(census())
    finally:
        exe.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert counts[-1] == counts[1], counts   # after the first cycle's one-time set-up

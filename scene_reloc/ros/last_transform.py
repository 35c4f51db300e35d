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
The last accepted map transform, kept for republishing at a fixed rate.

Nav2 looks ``map -> odom`` up at every planner and costmap cycle: a relocalizer that publishes
it only on the frames it localizes leaves the chain stale between fixes (with ``max_rate`` or
lost frames), and Nav2 errors. AMCL republishes its last ``map -> odom`` at every scan and
rtabmap at a fixed rate, post-dated by the transform tolerance; the node does the latter from
this holder. Pure Python (no rclpy): the node owns the timer and the publisher.
"""

import threading


class LastTransform:
    """Thread-safe holder of (parent, child, parent_from_child, fix time) or nothing."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value = None

    def set(self, parent, child, parent_from_child, fix_ns):
        with self._lock:
            self._value = (parent, child, parent_from_child.copy(), int(fix_ns))

    def clear(self):
        with self._lock:
            self._value = None

    def get(self):
        """Return (parent, child, parent_from_child, fix_ns), or None before the first fix."""
        with self._lock:
            return self._value

    def age_s(self, now_ns):
        """Seconds since the last fix (its image stamp), or None before the first one."""
        v = self.get()
        return None if v is None else max(0.0, (int(now_ns) - v[3]) / 1e9)

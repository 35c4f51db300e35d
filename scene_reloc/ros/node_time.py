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
The relocalization node's time: /tf into its buffer, time jumps, the map TF republisher.

A mixin of :class:`~scene_reloc.ros.reloc_node.RelocNode`. Time may jump back (a bag looped
with ``use_sim_time``): a clock jump, or /tf or image stamps going back by more than
``time_jump_threshold``, clears the transform buffer, the gates and the last fix instead of
leaving them wedged on the old timeline (the Python tf2 buffer is known to miss this).
"""

import time

from scene_reloc.ros import messages
from scene_reloc.ros.conversions import stamp_to_ns, transform_to_matrix
from scene_reloc.transform_buffer import ExtrapolationError, TransformError


class NodeTime:
    """/tf in, time jumps, and the fixed-rate republishing of the last map TF."""

    def on_tf(self, msg, static=False):
        for t in msg.transforms:
            try:
                ns = stamp_to_ns(t.header.stamp)
                if not static and t.header.frame_id.lstrip('/') not in self._map_frames():
                    # Per edge: edges are published by different nodes on different clocks
                    # (the map TF is ours, republished at now + transform_tolerance).
                    child = t.child_frame_id.lstrip('/')
                    newest = self._newest_tf_ns.get(child, 0)
                    if self._went_back(ns, newest):
                        self._time_jumped(f'/tf {t.header.frame_id} -> {child} went back from '
                                          f'{newest * 1e-9:.3f} to {ns * 1e-9:.3f} s')
                    self._newest_tf_ns[child] = max(self._newest_tf_ns.get(child, 0), ns)
                self.tf_buffer.set_transform(t.header.frame_id, t.child_frame_id, ns,
                                             transform_to_matrix(t.transform), static)
            except ValueError as e:
                self.get_logger().warning(f'ignored transform: {e}', throttle_duration_sec=5.0)

    def on_tf_static(self, msg):
        self.on_tf(msg, static=True)

    def _went_back(self, ns, newest):
        return newest > 0 and ns < newest - self.p('time_jump_threshold') * 1e9

    def _time_jumped(self, why):
        """Forget everything tied to the old timeline: transforms, gates, the last fix."""
        self._counts['time_jumps'] += 1
        self._newest_tf_ns, self._newest_image_ns = {}, 0
        self.tf_buffer.clear()
        self.pairing.reset()
        self.last_tf.clear()
        if self.gate is not None:
            self.gate.reset()
        self._reset_handoff()
        self.get_logger().warning(f'time jumped back ({why}): transform buffer, gates and '
                                  'the last fix cleared')
        self._set_status('warn', f'time jumped back: {why}; buffers cleared')

    def on_tf_timer(self):
        """Republish the last accepted map TF, post-dated from now, as rtabmap / AMCL do."""
        last = self.last_tf.get()
        if last is None or not self.p('publish_tf'):
            return
        parent, child, T, _ = last
        now_ns = self.get_clock().now().nanoseconds
        stamp = messages.ns_to_time(now_ns + int(self.p('transform_tolerance') * 1e9))
        self.tf_pub.publish(messages.tf_msg(stamp, parent, child, T))

    def _wait_for_transform(self, target, source, stamp_ns):
        """Look a transform up, waiting up to transform_timeout for /tf to catch up."""
        deadline = time.monotonic() + self.p('transform_timeout')
        while True:
            try:
                return self.tf_buffer.lookup(target, source, stamp_ns)
            except ExtrapolationError as e:
                if 'after the newest' not in str(e) or time.monotonic() >= deadline:
                    raise
            except TransformError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

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
What the relocalization node says about itself: /diagnostics, silence warnings, scene markers.

A mixin of :class:`~scene_reloc.ros.reloc_node.RelocNode` (it uses the node's parameters,
publishers, counters and clock); kept apart so that the node file holds the data path.
"""

import time

from scene_reloc.ros import messages


class NodeStatus:
    """Status, diagnostics and markers of the relocalization node."""

    def _set_status(self, level, message, values=None):
        changed = self._status[:2] != (level, message)
        self._status = (level, message, values or {})
        if changed and level == 'error':
            self.publish_diagnostics()

    def _topic(self, name):
        """Resolve one of the node's topic names (namespace and remaps applied)."""
        try:
            return self.resolve_topic_name(name)
        except Exception:  # noqa: BLE001 - older rclpy: say the relative name
            return name

    def _silence(self):
        """Return a warning when images stopped (or never came) while active, else ''."""
        timeout = self.p('image_timeout')
        if self.worker is None or not self._subs or timeout <= 0:
            return ''   # inactive, or idle in on_request mode: silence is expected
        quiet = time.monotonic() - (self._last_image or self._activated_at)
        if quiet < timeout:
            return ''
        topic = self._topic('image/compressed' if self.p('image_transport') == 'compressed'
                            else 'image')
        what = 'since activation' if self._last_image is None else 'for'
        return (f'no image on {topic} {what} {quiet:.0f} s: check the topic (remap it to the '
                f"camera) and that the camera's QoS matches qos_reliability="
                f'{self.p("qos_reliability")}')

    def publish_diagnostics(self):
        level, message, values = self._status
        silence = self._silence()
        if silence:
            level, message = 'warn', f'silent: {silence}'
            self.get_logger().warning(silence, throttle_duration_sec=10.0)
        w = self.worker
        info = {'state': message.split(':')[0], **values, **self._counts,
                'latency_s': round(self._last_latency, 4),
                'dropped_frames': w.dropped if w else 0, 'held': int(self._held is not None),
                'processed_frames': w.processed if w else 0,
                'scene_map': self._map_path or self.p('scene_map'),
                'map': self.map_gate.current or '', 'is_localized': self.localized,
                'loading': self._loading is not None and self._loading.is_alive(),
                'requested': self._request_until is not None,
                'handoff': self._handoff_result if self._handoff is None
                else f'sent {self._handoff["attempts"]}x, waiting for amcl_pose',
                'last_fix_age_s': _rounded(self.last_tf.age_s(
                    self.get_clock().now().nanoseconds))}
        self.diag_pub.publish(messages.diagnostics_msg(
            self.get_clock().now().to_msg(), self.get_fully_qualified_name(),
            self._map_path or self.p('scene_map'), level, message, info))

    def _publish_scene_markers(self):
        with self._lock:
            reloc = self.reloc
        if reloc is None:
            return
        current = self.map_gate.current
        xyz = reloc.map_points(current)
        self.marker_pub.publish(messages.scene_markers(
            self.get_clock().now().to_msg(), self._frame_of(reloc, current), xyz,
            self.p('max_marker_points')))



def _rounded(value):
    return 'never' if value is None else round(value, 3)

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
The node's conversation with a Nav2 robot: ``~/localized``, AMCL hand-off, pose hints, requests.

A mixin of :class:`~scene_reloc.ros.reloc_node.RelocNode`:

- ``~/localized`` (std_msgs/Bool, latched): true from the first accepted fix until
  ``lost_timeout`` seconds pass without one (or time jumps back, or the map changes).
- Hand-off to AMCL (``publish_initial_pose``): on lost -> localized, and on the first fix after
  ``~/relocalize``, the base pose goes out on ``initialpose`` (reliable, stamped with the image
  time so AMCL moves it by odometry), repeated every ``initial_pose_retry_period`` until the
  robot's ``amcl_pose`` agrees with it or ``initial_pose_retries`` are spent, as Nav2's
  localization system test does.
- Pose hints: an ``initialpose`` from someone else (rviz's "2D Pose Estimate") gates the next
  fixes (:class:`~scene_reloc.pose_hint.HintGate`); the node's own messages are recognised by
  their stamps and ignored.
- ``mode: on_request``: the camera is subscribed only while a request (``~/relocalize`` or a
  hint) is open: until a fix is accepted or ``request_timeout`` passes. Idle, the node costs
  nothing but its timers.
"""

from collections import deque
import time

from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool

from scene_reloc.geometry import invert_pose, quaternion_xyzw_to_rotation
from scene_reloc.pose_hint import (
    hint_covariance,
    HintGate,
    initial_pose_covariance,
    planar_agreement,
)
from scene_reloc.ros import messages
from scene_reloc.ros.conversions import InputError, stamp_to_ns
from scene_reloc.transform_buffer import TransformError

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)


class NodeHandoff:
    """~/localized, the AMCL hand-off, pose hints and on-request operation."""

    def _init_handoff(self):
        """Create what lives for the node's whole life (hint / amcl subscriptions, timer)."""
        self.localized = False
        self.hint_gate = HintGate(self.p('hint_confirmations'))
        self._hint_map_from_odom = None
        self._handoff = None          # the pose being handed to AMCL, while unconfirmed
        self._handoff_result = ''     # how the last hand-off ended (for /diagnostics)
        self._handoff_wanted = False  # ~/relocalize: hand the next fix off
        self._sent = deque(maxlen=64)  # stamps of our own initialpose messages
        self._request_until = None    # on_request: monotonic deadline of the open request
        self._last_accept = None
        self.initial_pose_pub = None
        if self.p('publish_initial_pose'):
            self.initial_pose_pub = self.create_publisher(
                PoseWithCovarianceStamped, 'initialpose',
                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            self.create_subscription(PoseWithCovarianceStamped, 'amcl_pose', self.on_amcl_pose,
                                     QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        if self.p('use_pose_hint'):
            self.create_subscription(PoseWithCovarianceStamped, 'initialpose', self.on_hint,
                                     QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.housekeeping_timer = self.create_timer(0.2, self.on_housekeeping, clock=self.steady)

    def _set_localized(self, value):
        if value == self.localized and value:
            return
        self.localized = value
        pub = getattr(self, 'localized_pub', None)
        if pub is not None:
            pub.publish(Bool(data=bool(value)))

    # ------------------------------------------------------------------ requests
    def request(self, why):
        """Open (or extend) a request to localize: in on_request mode, turn the camera on."""
        self._handoff_wanted = True
        if self.p('mode') != 'on_request' or self.worker is None:
            self._force_next = True
            return
        self._request_until = time.monotonic() + self.p('request_timeout')
        if not self._subs:
            self._subscribe_camera()
        self._set_status('warn', f'relocalizing on request ({why})')

    def _close_request(self, why):
        self._request_until = None
        if self.p('mode') == 'on_request':
            self._unsubscribe_camera()
            self._set_status(self._status[0] if why == 'localized' else 'warn',
                             f'idle: {why}; waiting for ~/relocalize or a pose hint',
                             self._status[2])

    # ------------------------------------------------------------------ accepted fixes
    def _gate_by_hint(self, body_T, map_from_odom):
        """Return (ok, why) for a fix (the body's pose) against the operator's pose hint."""
        if not self.hint_gate.active:
            return True, ''
        expected = None
        if self._hint_map_from_odom is not None and map_from_odom is not None:
            # The hint moved by odometry to the fix's time.
            expected = self._hint_map_from_odom @ invert_pose(map_from_odom) @ body_T
        return self.hint_gate.check(body_T, expected, map_from_odom)

    def _on_accepted(self, body_T, body_cov, stamp_ns, frame, map_from_odom):
        """Bookkeeping after a published fix: ~/localized, hand-off, request closing."""
        self._last_accept = time.monotonic()
        was = self.localized
        self._set_localized(True)
        if self.initial_pose_pub is not None and (not was or self._handoff_wanted):
            self._handoff = {'T': body_T, 'cov': initial_pose_covariance(body_cov),
                             'stamp_ns': stamp_ns, 'frame': frame, 'attempts': 0,
                             'map_from_odom': map_from_odom, 'next': 0.0}
            self._send_initial_pose()
        self._handoff_wanted = False
        if self._request_until is not None:
            self._close_request('localized')

    def _send_initial_pose(self):
        h = self._handoff
        h['attempts'] += 1
        h['next'] = time.monotonic() + self.p('initial_pose_retry_period')
        self._sent.append(h['stamp_ns'])
        self.initial_pose_pub.publish(messages.pose_msg(messages.ns_to_time(h['stamp_ns']),
                                                        h['frame'], h['T'], h['cov']))
        self.get_logger().info(f'sent the base pose on {self._topic("initialpose")} '
                               f'(attempt {h["attempts"]}/{self.p("initial_pose_retries")})')

    def on_amcl_pose(self, msg):
        h = self._handoff
        if h is None or stamp_to_ns(msg.header.stamp) < h['stamp_ns']:
            return
        try:
            amcl_T = pose_to_matrix(msg.pose.pose)
        except InputError:
            return
        expected = h['T']
        if h['map_from_odom'] is not None:
            try:   # our fix moved by odometry to AMCL's stamp
                expected = h['map_from_odom'] @ self.tf_buffer.lookup(
                    self.p('odom_frame_id'), self.p('base_frame_id'),
                    stamp_to_ns(msg.header.stamp))
            except TransformError:
                pass
        ok, dist, yaw = planar_agreement(amcl_T, expected, self.p('handoff_max_translation'),
                                         self.p('handoff_max_yaw'))
        if ok:
            self._handoff = None
            self._handoff_result = f'agreed ({dist:.2f} m, {yaw:.1f} deg)'
            self.get_logger().info(f'AMCL took the pose: amcl_pose within {dist:.2f} m / '
                                   f'{yaw:.1f} deg after {h["attempts"]} attempt(s)')

    # ------------------------------------------------------------------ hints
    def on_hint(self, msg):
        ns = stamp_to_ns(msg.header.stamp)
        if ns in self._sent:
            return   # our own hand-off
        try:
            T = pose_to_matrix(msg.pose.pose)
            cov3 = hint_covariance(msg.pose.covariance)
            frames = self._map_frames()
            if msg.header.frame_id.lstrip('/') not in frames:
                raise InputError(f'frame {msg.header.frame_id!r} is not the map frame '
                                 f'({", ".join(sorted(frames))})')
        except (InputError, ValueError) as e:
            self._bad_input(f'pose hint on {self._topic("initialpose")} ignored: {e}',
                            'bad_hints')
            return
        body = self.p('base_frame_id') or self.p('camera_frame_id')
        self._hint_map_from_odom = None
        if self.p('publish_mode') == 'map_to_odom' and body:
            try:
                odom_from_body = self.tf_buffer.lookup(self.p('odom_frame_id'), body, ns)
            except TransformError:
                try:
                    odom_from_body = self.tf_buffer.lookup(self.p('odom_frame_id'), body, 0)
                except TransformError:
                    odom_from_body = None
            if odom_from_body is not None:
                self._hint_map_from_odom = T @ invert_pose(odom_from_body)
        self.hint_gate.set(T, cov3)
        self.get_logger().info('pose hint received: the next fixes must agree with it')
        self.request('pose hint')

    # ------------------------------------------------------------------ timer
    def on_housekeeping(self):
        now = time.monotonic()
        timeout = self.p('lost_timeout')
        if self.localized and timeout > 0 and self._last_accept is not None and \
                now - self._last_accept > timeout:
            self._set_localized(False)
        if self._request_until is not None and now > self._request_until:
            self._close_request(f'no fix within request_timeout '
                                f'({self.p("request_timeout"):.0f} s)')
            self.get_logger().warning('relocalization request timed out')
        h = self._handoff
        if h is not None and now >= h['next']:
            if h['attempts'] >= self.p('initial_pose_retries'):
                self._handoff = None
                self._handoff_result = f'no agreement after {h["attempts"]} attempts'
                self.get_logger().warning(
                    f'amcl_pose never agreed with the pose sent on {self._topic("initialpose")}'
                    f' after {h["attempts"]} attempts: is AMCL running, on the same map '
                    'frame, and is base_frame_id its base frame?')
            else:
                self._send_initial_pose()

    def _reset_handoff(self):
        """Forget hints, hand-offs and the localized state (time jumped, map changed)."""
        self.hint_gate.reset()
        self._hint_map_from_odom = None
        self._handoff = None
        self._last_accept = None
        self._set_localized(False)



def pose_to_matrix(pose):
    """geometry_msgs/Pose -> 4x4, refusing non-finite values and non-unit quaternions."""
    p, q = pose.position, pose.orientation
    t = np.array([p.x, p.y, p.z], float)
    xyzw = np.array([q.x, q.y, q.z, q.w], float)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(xyzw))):
        raise InputError('the pose has non-finite values')
    if abs(np.linalg.norm(xyzw) - 1.0) > 1e-3:
        raise InputError(f'the orientation is not a unit quaternion (norm '
                         f'{np.linalg.norm(xyzw):.3f})')
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_rotation(xyzw / np.linalg.norm(xyzw))
    T[:3, 3] = t
    return T

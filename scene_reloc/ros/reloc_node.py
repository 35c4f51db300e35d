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
The relocalization node: camera images in, the camera's pose in the scene map out.

Lifecycle: configure loads the scene map and the model onto the device and warms up; activate
subscribes to ``image`` (or ``image/compressed``) and ``camera_info``; deactivate unsubscribes;
cleanup releases the model. With ``autostart`` (default) it configures and activates itself.

Inference runs in a keep-latest worker: the newest frame is processed, older ones are dropped
and counted. A pose is published (``~/pose``, TF ``map->odom`` or ``map->camera``) only when the
core says it localized and the gates pass; everything else goes to /diagnostics and the log.
Every image is accounted for on /diagnostics: ``received = rate_limited + (bad_input -
undecodable) + held + dropped_frames + processed_frames`` (+ up to two in the worker) and
``processed_frames = localized + rejected + undecodable + failed`` (``undecodable``: refused in
the worker, the image or the CameraInfo of its stamp).

Around it: :mod:`~scene_reloc.ros.node_maps` (loading / switching maps, parameters),
:mod:`~scene_reloc.ros.node_status` (diagnostics, markers), :mod:`~scene_reloc.ros.node_handoff`
(~/localized, AMCL hand-off, pose hints, on-request mode) and :mod:`~scene_reloc.ros.node_time`
(/tf, time jumps, the map TF republisher).
"""

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from scene_reloc.pose_gate import (
    covariance_to_body,
    map_from_odom,
    MapSelectionGate,
    OdometryConsistencyGate,
)
from scene_reloc.ros import messages
from scene_reloc.ros.camera_pairing import CalibrationPairing
from scene_reloc.ros.conversions import (
    CameraModel,
    compressed_to_rgb,
    image_to_rgb,
    InputError,
    stamp_to_ns,
)
from scene_reloc.ros.keep_latest import KeepLatestWorker
from scene_reloc.ros.last_transform import LastTransform
from scene_reloc.ros.node_handoff import LATCHED, NodeHandoff
from scene_reloc.ros.node_maps import NodeMaps, release_freed_memory
from scene_reloc.ros.node_status import NodeStatus
from scene_reloc.ros.node_time import NodeTime
from scene_reloc.ros.params import NODE_NAME, PARAMETERS
from scene_reloc.transform_buffer import TransformBuffer, TransformError


class RelocNode(NodeMaps, NodeStatus, NodeHandoff, NodeTime, LifecycleNode):

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, doc) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=doc))
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.tf_buffer = TransformBuffer(cache_seconds=30.0)
        self.reloc = None
        self.camera = None
        self.worker = None
        self.gate = None
        self.last_tf = LastTransform()
        self.tf_timer = None
        self.map_gate = MapSelectionGate(self.p('map_switch_frames'))
        self._lock = threading.Lock()   # guards self.reloc (runtime map switch)
        self._subs = []
        self._force_next = False
        self._held = None   # newest image that came before any CameraInfo
        self.pairing = CalibrationPairing()
        self._last_processed = 0.0
        self._status = ('error', 'unconfigured: no scene map loaded', {})
        self._counts = {'received': 0, 'localized': 0, 'rejected': 0, 'bad_input': 0,
                        'bad_camera_info': 0, 'bad_hints': 0, 'rate_limited': 0,
                        'undecodable': 0, 'failed': 0, 'time_jumps': 0}
        self._map_path = self._map_param = ''
        self._loading = None            # background map load in progress (a thread)
        self._reverting = False
        self._newest_tf_ns = {}       # child frame -> newest stamp seen on /tf
        self._newest_image_ns = 0
        self._last_latency = float('nan')
        self._last_image = None
        self._activated_at = time.monotonic()
        self._tf_subs = [
            # Best effort on purpose: with a reliable reader one lost sample holds back every
            # later one until Fast DDS's next heartbeat (3 s by default; measured under a 30 Hz
            # image stream). The buffer interpolates, so a lost sample costs nothing.
            self.create_subscription(TFMessage, '/tf', self.on_tf, QoSProfile(
                depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)),
            self.create_subscription(TFMessage, '/tf_static', self.on_tf_static, QoSProfile(
                depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                reliability=ReliabilityPolicy.RELIABLE)),
        ]
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.tf_pub = self.create_publisher(TFMessage, '/tf', 100)
        # Diagnostics and housekeeping run on the steady clock: with use_sim_time and no
        # /clock (a paused bag) the node must still say what it is waiting for.
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.diag_timer = self.create_timer(self.p('diagnostics_period'), self.publish_diagnostics,
                                            clock=self.steady)
        self.srv = self.create_service(Trigger, '~/relocalize', self.on_relocalize)
        self._init_handoff()
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(
                seconds=-self.p('time_jump_threshold')), on_clock_change=False),
            post_callback=lambda jump: self._time_jumped('the clock jumped back'))

    def p(self, name):
        return self.get_parameter(name).value

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state):
        try:
            if self.p('publish_initial_pose') and not self.p('base_frame_id'):
                raise ValueError('publish_initial_pose needs base_frame_id (AMCL takes the '
                                 "robot base's pose, e.g. base_link)")
            path = self._checked_path(self.p('scene_map'))
            self.reloc = self._load_map(path)
            self._map_path, self._map_param = path, self.p('scene_map')
        except Exception as e:  # noqa: BLE001 - any load failure is reported, not raised
            self._set_status('error', f'no map: {e}')
            self.get_logger().error(f'configure failed: {e}')
            return TransitionCallbackReturn.FAILURE
        self.pose_pub = self.create_lifecycle_publisher(
            PoseWithCovarianceStamped, '~/pose', LATCHED if self.p('latch_pose') else 10)
        self.localized_pub = self.create_lifecycle_publisher(Bool, '~/localized', LATCHED)
        self.marker_pub = self.create_lifecycle_publisher(MarkerArray, '~/markers', QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE))
        self.gate = OdometryConsistencyGate(self.p('max_jump_translation'),
                                            self.p('max_jump_rotation'),
                                            self.p('jump_confirmations'))
        self._set_status('warn', 'configured, not active')
        self.get_logger().info(f'loaded scene map {self.p("scene_map")} on '
                               f'{self.reloc.extractor.device} (backbone runtime '
                               f'{self.reloc.extractor.runtime})')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        self.worker = KeepLatestWorker(self.process_frame, self.on_worker_error, 'reloc-worker')
        if self.p('mode') == 'continuous':
            self._subscribe_camera()
        if self.p('tf_publish_rate') > 0:
            self.tf_timer = self.create_timer(1.0 / self.p('tf_publish_rate'), self.on_tf_timer)
        self._activated_at, self._last_image = time.monotonic(), None
        self._set_status('warn', 'active, waiting for images' if self._subs else
                         'idle: waiting for ~/relocalize or a pose hint')
        result = super().on_activate(state)
        self.localized = None   # publish the state once, whatever it is
        self._set_localized(False)
        if self.p('publish_markers'):
            self._publish_scene_markers()
        return result

    def _subscribe_camera(self):
        rel = (ReliabilityPolicy.RELIABLE if self.p('qos_reliability') == 'reliable'
               else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(depth=self.p('qos_depth'), reliability=rel)
        if self.p('image_transport') == 'compressed':
            self._subs.append(self.create_subscription(
                CompressedImage, 'image/compressed', self.on_compressed, qos))
        else:
            self._subs.append(self.create_subscription(Image, 'image', self.on_image, qos))
        self._subs.append(self.create_subscription(CameraInfo, 'camera_info',
                                                   self.on_camera_info, qos))
        self._activated_at, self._last_image = time.monotonic(), None

    def _unsubscribe_camera(self):
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []

    def on_deactivate(self, state):
        if self.tf_timer is not None:
            self.destroy_timer(self.tf_timer)
            self.tf_timer = None
        self._unsubscribe_camera()
        self._request_until = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        self._set_status('warn', 'inactive')
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.destroy_lifecycle_publisher(self.pose_pub)
        self.destroy_lifecycle_publisher(self.marker_pub)
        self.destroy_lifecycle_publisher(self.localized_pub)
        self.localized_pub = None
        self._reset_handoff()
        self.last_tf.clear()
        with self._lock:
            self.reloc = None
        release_freed_memory()
        self._set_status('error', 'unconfigured: no scene map loaded')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------- inputs
    def on_camera_info(self, msg):
        ns = stamp_to_ns(msg.header.stamp)
        try:
            self.camera = CameraModel(msg)
        except InputError as e:
            self.camera = None
            self.pairing.on_info(ns, None, str(e))
            self._bad_input(str(e), 'bad_camera_info')
            return
        self.pairing.on_info(ns, self.camera)
        held, self._held = self._held, None
        # An image that arrived just before its CameraInfo (separate subscriptions race).
        if held is not None and stamp_to_ns(held[0].header.stamp) == ns and \
                self.worker is not None:
            self.worker.submit((held[0], held[1], self.camera))
        elif held is not None:
            self._counts['bad_input'] += 1    # it never got its CameraInfo

    def on_image(self, msg):
        self._on_frame(msg, image_to_rgb)

    def on_compressed(self, msg):
        self._on_frame(msg, compressed_to_rgb)

    def on_relocalize(self, request, response):
        response.success = self.worker is not None
        if response.success:
            self.request('~/relocalize')
        response.message = ('the next frame will be processed' if response.success
                            else 'not active: configure and activate the node first')
        return response

    def _on_frame(self, msg, decode):
        self._counts['received'] += 1
        self._last_image = time.monotonic()
        try:
            ns = stamp_to_ns(msg.header.stamp)
            if self._went_back(ns, self._newest_image_ns):
                self._time_jumped(f'image stamps went back from '
                                  f'{self._newest_image_ns * 1e-9:.3f} to {ns * 1e-9:.3f} s')
            self._newest_image_ns = max(self._newest_image_ns, ns)
            self.pairing.on_image(ns)
            max_rate = self.p('max_rate')
            now = time.monotonic()
            if max_rate > 0 and not self._force_next and now - self._last_processed < 1 / max_rate:
                self._counts['rate_limited'] += 1
                return
            if self.camera is None:
                # Held until its CameraInfo comes; the one it replaces never got one.
                if self._held is not None:
                    self._counts['bad_input'] += 1
                self._held = (msg, decode)
                self._bad_input(f'no CameraInfo received on {self._topic("camera_info")} yet (or '
                                f'it was invalid); check the topic and that its QoS matches '
                                f'qos_reliability={self.p("qos_reliability")}', counter=None)
                return
            self._force_next = False
            self._last_processed = now
            if self.worker is not None:
                # Decoding happens in the worker: the executor thread only hands frames over.
                self.worker.submit((msg, decode, self.camera))
        except InputError as e:
            self._bad_input(str(e))
        except Exception as e:  # noqa: BLE001 - a callback must never end spin()
            self._bad_input(f'unexpected error on an incoming image: {e!r}')

    def _bad_input(self, why, counter='bad_input'):
        if counter:
            self._counts[counter] += 1
        self._set_status('error', f'bad input: {why}')
        self.get_logger().warning(f'bad input: {why}', throttle_duration_sec=2.0)

    # ---------------------------------------------------------------- processing
    def on_worker_error(self, item, exc):
        self._counts['failed'] += 1
        self._set_status('error', f'processing failed: {exc!r}')
        self.get_logger().error(f'processing failed: {exc!r}')

    def process_frame(self, item):
        msg, decode, camera = item
        header = msg.header
        t0 = time.perf_counter()
        try:
            try:
                camera = self.pairing.calibration_for(stamp_to_ns(header.stamp), camera)
            except ValueError as e:
                raise InputError(str(e)) from e
            image, K = camera.prepare(decode(msg))
        except InputError as e:
            self._counts['undecodable'] += 1
            self._bad_input(str(e))
            return
        with self._lock:
            reloc = self.reloc
        if reloc is None:
            self._counts['rejected'] += 1
            return
        res = reloc.localize(image, K)
        self._last_latency = time.perf_counter() - t0
        values = {'inliers': res.num_inliers, 'correspondences': res.num_correspondences,
                  'reprojection_error_px': round(res.reprojection_error_px, 3)}
        if not res.success:
            self._counts['rejected'] += 1
            reason = 'bad input' if res.reason == 'bad_input' else 'lost'
            self._set_status('error' if reason == 'bad input' else 'warn',
                             f'{reason}: {res.reason} {res.detail}'.strip(), values)
            return
        if getattr(reloc, 'frame_ids', None):
            ok, why = self.map_gate.check(res.map_name)
            if not ok:
                self._counts['rejected'] += 1
                self._set_status('warn', f'rejected: {why}', values)
                return
            if why and self.gate is not None:
                self.gate.reset()   # another map: map->odom may jump
                self.get_logger().info(why)
        stamp_ns = stamp_to_ns(header.stamp)
        camera_frame = self.p('camera_frame_id') or header.frame_id
        try:
            self._publish(res, stamp_ns, header.stamp, camera_frame, values,
                          self._frame_of(reloc, res.map_name))
        except TransformError as e:
            self._counts['rejected'] += 1
            self._set_status('warn', f'lost: localized but cannot publish: {e}', values)
            self.get_logger().warning(str(e), throttle_duration_sec=2.0)

    def _publish(self, res, stamp_ns, stamp, camera_frame, values, gmap):
        map_from_cam, cov = res.world_from_cam, res.covariance
        body, body_T, body_cov = camera_frame, map_from_cam, cov
        if self.p('base_frame_id'):
            body = self.p('base_frame_id')
            cam_from_base = self._wait_for_transform(camera_frame, body, stamp_ns)
            body_T = map_from_cam @ cam_from_base
            body_cov = covariance_to_body(map_from_cam, cov, cam_from_base)
        m_from_o = None
        if self.p('publish_mode') == 'map_to_odom':
            odom = self.p('odom_frame_id')
            odom_from_cam = self._wait_for_transform(odom, camera_frame, stamp_ns)
            m_from_o = map_from_odom(map_from_cam, odom_from_cam)
        checks = [lambda: self._gate_by_hint(body_T, m_from_o)]
        if m_from_o is not None and self.p('consistency_check'):
            checks.insert(0, lambda: self.gate.check(m_from_o))
        for check in checks:
            ok, why = check()
            if not ok:
                self._counts['rejected'] += 1
                self._set_status('warn', f'rejected: {why}', values)
                self.get_logger().info(f'fix held back: {why}', throttle_duration_sec=1.0)
                return
            if why:
                self.get_logger().info(why)
        if m_from_o is not None:
            parent_from_child, child = m_from_o, self.p('odom_frame_id')
        else:
            parent_from_child, child = map_from_cam, camera_frame
        self.last_tf.set(gmap, child, parent_from_child, stamp_ns)
        if self.p('publish_tf'):
            tf_stamp = messages.ns_to_time(stamp_ns + int(self.p('transform_tolerance') * 1e9))
            self.tf_pub.publish(messages.tf_msg(tf_stamp, gmap, child, parent_from_child))
        self.pose_pub.publish(messages.pose_msg(stamp, gmap, body_T, body_cov))
        if self.p('publish_markers') and res.inlier_points3d is not None:
            self.marker_pub.publish(messages.inlier_markers(stamp, gmap, res.inlier_points3d,
                                                            map_from_cam))
        self._counts['localized'] += 1
        self._set_status('ok', f'localized ({body} in {gmap})', values)
        self._on_accepted(body_T, body_cov, stamp_ns, gmap, m_from_o)

def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = RelocNode()
        if node.get_parameter('autostart').value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if node.worker is not None:
                node.worker.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()


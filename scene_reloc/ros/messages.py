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

"""Building the node's outgoing messages: pose, TF, diagnostics, markers."""

from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseWithCovarianceStamped, TransformStamped
import numpy as np
from std_msgs.msg import ColorRGBA
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from scene_reloc.ros.conversions import covariance_to_msg, matrix_to_pose, matrix_to_transform


def ns_to_time(ns):
    """Int nanoseconds -> builtin_interfaces/Time."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def pose_msg(stamp, frame_id, T, cov6):
    """PoseWithCovarianceStamped of ``T`` (frame_id_from_body) with a 6x6 covariance."""
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    matrix_to_pose(T, msg.pose.pose)
    msg.pose.covariance = covariance_to_msg(cov6)
    return msg


def tf_msg(stamp, parent, child, parent_from_child):
    """TFMessage with one transform."""
    ts = TransformStamped()
    ts.header.stamp = stamp
    ts.header.frame_id = parent
    ts.child_frame_id = child
    matrix_to_transform(parent_from_child, ts.transform)
    return TFMessage(transforms=[ts])


LEVELS = {'ok': DiagnosticStatus.OK, 'warn': DiagnosticStatus.WARN,
          'error': DiagnosticStatus.ERROR, 'stale': DiagnosticStatus.STALE}


def diagnostics_msg(stamp, node_name, hardware_id, level, message, values):
    """DiagnosticArray with the node's one status; ``values`` a dict shown as key/value pairs."""
    status = DiagnosticStatus(level=LEVELS[level], name=f'{node_name}: relocalization',
                              message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr


def _points_marker(stamp, frame_id, ns, xyz, rgba, size, lifetime_s=0.0):
    m = Marker()
    m.header.stamp = stamp
    m.header.frame_id = frame_id
    m.ns = ns
    m.id = 0
    m.type = Marker.POINTS
    m.action = Marker.ADD
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = size
    m.color = ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])
    m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in xyz]
    m.lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    return m


def scene_markers(stamp, frame_id, xyz, max_points):
    """Mark the scene's 3D map points (subsampled evenly to ``max_points``)."""
    xyz = np.asarray(xyz)
    if len(xyz) > max_points > 0:
        xyz = xyz[np.linspace(0, len(xyz) - 1, max_points).astype(int)]
    return MarkerArray(markers=[_points_marker(stamp, frame_id, 'scene_points', xyz,
                                               (0.6, 0.6, 0.6, 0.8), 0.01)])


def inlier_markers(stamp, frame_id, inliers_xyz, camera_T):
    """Mark the current inlier 3D points and the rays from the camera centre to them."""
    pts = _points_marker(stamp, frame_id, 'inliers', inliers_xyz, (0.1, 0.9, 0.2, 1.0), 0.02,
                         lifetime_s=2.0)
    rays = Marker()
    rays.header = pts.header
    rays.ns = 'inlier_rays'
    rays.type = Marker.LINE_LIST
    rays.action = Marker.ADD
    rays.pose.orientation.w = 1.0
    rays.scale.x = 0.002
    rays.color = ColorRGBA(r=0.1, g=0.9, b=0.2, a=0.3)
    rays.lifetime = pts.lifetime
    c = Point(x=float(camera_T[0, 3]), y=float(camera_T[1, 3]), z=float(camera_T[2, 3]))
    step = max(1, len(inliers_xyz) // 100)
    for p in pts.points[::step]:
        rays.points += [c, p]
    return MarkerArray(markers=[pts, rays])

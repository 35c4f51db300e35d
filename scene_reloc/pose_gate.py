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
Deciding whether a relocalization is trusted enough to publish, and moving its covariance.

:class:`OdometryConsistencyGate` rejects a relocalization whose ``map_from_odom`` jumps away
from the last accepted one (odometry says the robot did not jump) unless ``confirmations``
consecutive relocalizations agree on the new place (the robot really was kidnapped, or odometry
drifted).
"""

import numpy as np

from scene_reloc.geometry import invert_pose, pose_error


class OdometryConsistencyGate:
    """
    Jump check of ``map_from_odom`` against the last accepted value.

    :param max_translation_m: largest accepted change of map_from_odom's translation.
    :param max_rotation_deg: largest accepted change of its rotation.
    :param confirmations: consecutive agreeing relocalizations that accept a jump.
    """

    def __init__(self, max_translation_m=0.5, max_rotation_deg=15.0, confirmations=3):
        self.max_t = max_translation_m
        self.max_r = max_rotation_deg
        self.confirmations = max(1, int(confirmations))
        self.accepted = None
        self._candidate = None
        self._count = 0

    def reset(self):
        self.accepted, self._candidate, self._count = None, None, 0

    def _close(self, a, b):
        dt, dr = pose_error(a, b)
        return dt <= self.max_t and dr <= self.max_r

    def check(self, map_from_odom):
        """
        Return ``(accepted, reason)`` for a new ``map_from_odom`` estimate.

        The first estimate is accepted. A jump is held back until ``confirmations``
        consecutive estimates agree with each other.
        """
        if self.accepted is None or self._close(map_from_odom, self.accepted):
            self.accepted, self._candidate, self._count = map_from_odom, None, 0
            return True, ''
        if self._candidate is not None and self._close(map_from_odom, self._candidate):
            self._count += 1
        else:
            self._candidate, self._count = map_from_odom, 1
        dt, dr = pose_error(map_from_odom, self.accepted)
        if self._count >= self.confirmations:
            self.accepted, self._candidate, self._count = map_from_odom, None, 0
            return True, f'jump of {dt:.2f} m / {dr:.1f} deg confirmed'
        return False, (f'jump of {dt:.2f} m / {dr:.1f} deg against odometry '
                       f'({self._count}/{self.confirmations} confirmations)')


class MapSelectionGate:
    """
    Hysteresis on a site's map choice: the current map changes only with evidence.

    The first localized map is taken; a different map must win ``confirmations`` consecutive
    localized frames before the node follows it (frames in no map neither count nor reset).
    """

    def __init__(self, confirmations=3):
        self.confirmations = max(1, int(confirmations))
        self.reset()

    def reset(self):
        self.current, self._candidate, self._count = None, None, 0

    def check(self, map_name):
        """Return ``(accepted, reason)`` for a pose in ``map_name``."""
        if self.current is None or map_name == self.current:
            self.current, self._candidate, self._count = map_name, None, 0
            return True, ''
        if map_name == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = map_name, 1
        if self._count >= self.confirmations:
            old, self.current, self._candidate, self._count = self.current, map_name, None, 0
            return True, f'switched map {old} -> {map_name}'
        return False, (f'map switch {self.current} -> {map_name} pending '
                       f'({self._count}/{self.confirmations} frames)')


def covariance_to_body(world_from_cam, cov_cam, cam_from_body):
    """
    Covariance of ``world_from_body = world_from_cam @ cam_from_body`` (ROS convention).

    Both covariances are (x, y, z, rx, ry, rz) with rotations as small angles about the world
    axes (left perturbation), so the rotation block is unchanged and the position of the body
    picks up the lever arm ``a = R_wc t_cb``: ``dp_b = dp_c - [a]x dtheta``.
    """
    a = world_from_cam[:3, :3] @ cam_from_body[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return J @ cov_cam @ J.T


def map_from_odom(map_from_cam, odom_from_cam):
    """REP-105: the map->odom correction that puts the camera where relocalization says."""
    return map_from_cam @ invert_pose(odom_from_cam)

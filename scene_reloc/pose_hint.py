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
Planar pose hand-offs with a 2D navigation stack (AMCL, rviz's "2D Pose Estimate").

Nav2 thinks in (x, y, yaw) of the robot base in the map. Three things live here, free of ROS:

- :func:`initial_pose_covariance`: the covariance sent on ``/initialpose`` so that Nav2's
  message validation accepts it (finite, every element in [0, 1e9]) and AMCL's particle cloud is
  neither a needle nor the whole map;
- :class:`HintGate`: an operator's ``/initialpose`` taken as a prior that gates the next fixes
  (a fix far outside the hint's covariance is held back unless fixes confirm it);
- :func:`planar_agreement`: whether two poses agree in (x, y, yaw), e.g. AMCL's ``amcl_pose``
  and the relocalization that was handed to it.
"""

import numpy as np

# 99 % quantile of the chi-square distribution with 3 degrees of freedom (x, y, yaw).
CHI2_3DOF_99 = 11.345
# Nav2 (newest) refuses covariance elements outside [0, 1e9].
NAV2_COVARIANCE_MAX = 1e9


def planar(T):
    """Return (x, y, yaw) of a 4x4 pose; yaw is the heading of the body's x axis in the map."""
    T = np.asarray(T, float)
    return float(T[0, 3]), float(T[1, 3]), float(np.arctan2(T[1, 0], T[0, 0]))


def _wrap(angle):
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def planar_difference(a, b):
    """(dx, dy, dyaw) of pose ``a`` relative to ``b`` in the map, yaw wrapped to [-pi, pi)."""
    xa, ya, ta = planar(a)
    xb, yb, tb = planar(b)
    return np.array([xa - xb, ya - yb, _wrap(ta - tb)])


def planar_agreement(a, b, max_translation_m, max_yaw_deg):
    """Return ``(agrees, distance_m, yaw_deg)`` for two poses compared in (x, y, yaw)."""
    d = planar_difference(a, b)
    dist, yaw = float(np.hypot(d[0], d[1])), float(np.degrees(abs(d[2])))
    return dist <= max_translation_m and yaw <= max_yaw_deg, dist, yaw


def initial_pose_covariance(cov6, min_std_m=0.05, min_std_deg=2.0):
    """
    Return the 6x6 covariance to send on ``/initialpose`` for a relocalization's ``cov6``.

    Diagonal (AMCL samples x, y and yaw independently; Nav2's newest validation refuses
    negative elements, which off-diagonal terms can be), every element in [0, 1e9], with a
    floor so that a centimetre fix does not collapse AMCL's particle cloud onto one pose.
    Non-finite variances become 1e9 (unknown).
    """
    var = np.diag(np.asarray(cov6, float)).copy()
    var[~np.isfinite(var)] = NAV2_COVARIANCE_MAX
    floor = np.array([min_std_m ** 2] * 3 + [np.radians(min_std_deg) ** 2] * 3)
    return np.diag(np.clip(np.maximum(var, floor), 0.0, NAV2_COVARIANCE_MAX))


def hint_covariance(cov6, min_std_m=0.05, min_std_deg=2.0):
    """Return the (x, y, yaw) block of a hint's ROS covariance, finite, floored and SPD."""
    c = np.asarray(cov6, float).reshape(6, 6)
    idx = [0, 1, 5]
    c3 = c[np.ix_(idx, idx)]
    if not np.all(np.isfinite(c3)):
        raise ValueError('the hint covariance has non-finite elements')
    c3 = 0.5 * (c3 + c3.T)
    floor = np.diag([min_std_m ** 2, min_std_m ** 2, np.radians(min_std_deg) ** 2])
    w, V = np.linalg.eigh(c3 + floor)
    return (V * np.maximum(w, 1e-12)) @ V.T


class HintGate:
    """
    An operator's pose hint that gates the next fixes.

    :meth:`set` takes the hint (the body's pose in the map at the hint's time, or a pose the
    caller has already moved to the fix's time with odometry) and its (x, y, yaw) covariance.
    :meth:`check` accepts a fix within the 99 % ellipse of the hint (Mahalanobis distance in
    x, y, yaw), which consumes the hint; a fix outside is rejected unless ``confirmations``
    consecutive fixes agree with each other (then the hint was wrong and is dropped).
    """

    def __init__(self, confirmations=3, agree_m=0.25, agree_deg=10.0):
        self.confirmations = max(1, int(confirmations))
        self.agree_m, self.agree_deg = agree_m, agree_deg
        self.reset()

    def reset(self):
        self.hint, self.cov3, self._candidate, self._count = None, None, None, 0

    @property
    def active(self):
        return self.hint is not None

    def set(self, map_from_body, cov3):
        self.hint = np.asarray(map_from_body, float).copy()
        self.cov3 = np.asarray(cov3, float)
        self._candidate, self._count = None, 0

    def mahalanobis2(self, fix, expected):
        d = planar_difference(fix, expected)
        return float(d @ np.linalg.solve(self.cov3, d))

    def check(self, fix, expected=None, anchor=None):
        """
        Return ``(accepted, reason)`` for a fix (map_from_body).

        ``expected`` is the hint moved to the fix's time (by odometry); default: the hint.
        ``anchor`` is what consecutive fixes must share to confirm each other (their
        map_from_odom on a moving robot); default: the fix itself.
        """
        if self.hint is None:
            return True, ''
        expected = self.hint if expected is None else expected
        m2 = self.mahalanobis2(fix, expected)
        if m2 <= CHI2_3DOF_99:
            self.reset()
            return True, f'agrees with the pose hint (Mahalanobis {np.sqrt(m2):.1f})'
        anchor = fix if anchor is None else anchor
        if self._candidate is not None and \
                planar_agreement(anchor, self._candidate, self.agree_m, self.agree_deg)[0]:
            self._count += 1
        else:
            self._count = 1
        self._candidate = np.asarray(anchor, float).copy()
        d = planar_difference(fix, expected)
        where = f'{np.hypot(d[0], d[1]):.2f} m / {np.degrees(abs(d[2])):.0f} deg'
        if self._count >= self.confirmations:
            self.reset()
            return True, f'{self.confirmations} fixes {where} from the pose hint: hint dropped'
        return False, (f'{where} from the pose hint (Mahalanobis {np.sqrt(m2):.1f} > '
                       f'{np.sqrt(CHI2_3DOF_99):.1f}; {self._count}/{self.confirmations} '
                       f'confirmations)')

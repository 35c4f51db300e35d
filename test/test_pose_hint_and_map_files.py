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

"""Pose hints, the AMCL hand-off covariance, map path confinement: known answers, no ROS."""

import json
import os
import struct

import numpy as np
import pytest

from scene_reloc.map_files import check_map_path, MapPathError
from scene_reloc.pose_hint import (
    hint_covariance,
    HintGate,
    initial_pose_covariance,
    planar,
    planar_agreement,
)
from scene_reloc.transform_buffer import TransformBuffer


def pose2d(x, y, yaw_deg, z=0.0):
    a = np.radians(yaw_deg)
    T = np.eye(4)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    T[:3, 3] = x, y, z
    return T


def rviz_covariance(std_xy=0.5, std_yaw_deg=15.0):
    """Return the covariance rviz's 2D Pose Estimate sends (0.25 m^2, 0.0685 rad^2)."""
    c = np.zeros(36)
    c[0] = c[7] = std_xy ** 2
    c[35] = np.radians(std_yaw_deg) ** 2
    return c


def test_planar_reads_x_y_yaw_and_wraps_the_yaw_difference():
    assert np.allclose(planar(pose2d(1.0, -2.0, 30.0, z=5.0)), (1.0, -2.0, np.radians(30.0)))
    ok, dist, yaw = planar_agreement(pose2d(0, 0, 179.0), pose2d(0.3, 0.4, -179.0), 0.5, 3.0)
    assert ok and dist == pytest.approx(0.5) and yaw == pytest.approx(2.0)
    assert not planar_agreement(pose2d(0, 0, 0), pose2d(0, 0, 20), 1.0, 10.0)[0]


def test_initial_pose_covariance_passes_nav2_validation_and_has_a_floor():
    cov = np.full((6, 6), -0.3)           # negative off-diagonals: Nav2's newest refuses them
    np.fill_diagonal(cov, [1e-8, 1e-2, 1e-6, 1e-9, np.nan, 2e12])
    out = initial_pose_covariance(cov, min_std_m=0.05, min_std_deg=2.0)
    assert np.all(np.isfinite(out)) and np.all(out >= 0) and np.all(out <= 1e9)
    assert np.count_nonzero(out - np.diag(np.diag(out))) == 0
    d = np.diag(out)
    assert d[0] == pytest.approx(0.05 ** 2) and d[1] == pytest.approx(1e-2)
    assert d[3] == pytest.approx(np.radians(2.0) ** 2)
    assert d[4] == 1e9 and d[5] == 1e9   # unknown (NaN) and absurd variances: 'no idea'


def test_hint_gate_accepts_inside_the_ellipse_and_holds_back_outside_until_confirmed():
    gate = HintGate(confirmations=3)
    cov3 = hint_covariance(rviz_covariance())
    gate.set(pose2d(2.0, 1.0, 90.0), cov3)
    # 0.5 m std: a fix 1.2 m off (2.4 sigma in one axis) is within the 99 % ellipse ...
    assert gate.check(pose2d(3.2, 1.0, 90.0))[0]
    assert not gate.active                      # ... and consumes the hint
    gate.set(pose2d(2.0, 1.0, 90.0), cov3)
    far = pose2d(6.0, 1.0, 90.0)                # 8 sigma away
    results = [gate.check(far) for _ in range(3)]
    assert [ok for ok, _ in results] == [False, False, True]
    assert 'confirmations' in results[0][1] and 'hint dropped' in results[2][1]
    # Disagreeing fixes never confirm each other.
    gate.set(pose2d(2.0, 1.0, 90.0), cov3)
    flips = [gate.check(pose2d(6.0 + 2.0 * (i % 2), 1.0, 90.0))[0] for i in range(6)]
    assert not any(flips)


def test_hint_gate_compares_yaw_and_moves_the_hint_by_odometry():
    gate = HintGate()
    gate.set(pose2d(0, 0, 0), hint_covariance(rviz_covariance(std_yaw_deg=5.0)))
    assert not gate.check(pose2d(0, 0, 40.0))[0]      # right place, wrong heading (8 sigma)
    gate.reset()
    gate.set(pose2d(0, 0, 0), hint_covariance(rviz_covariance()))
    # The robot drove 3 m since the hint; the caller moved the hint by odometry.
    assert gate.check(pose2d(3.0, 0, 0), expected=pose2d(3.05, 0, 0))[0]


def test_hint_covariance_refuses_non_finite_and_repairs_singular():
    with pytest.raises(ValueError):
        hint_covariance(np.full(36, np.nan))
    c3 = hint_covariance(np.zeros(36))            # all-zero (some tools send it): floored
    assert np.all(np.linalg.eigvalsh(c3) > 0)


def test_transform_buffer_clear_keeps_static_transforms():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base', 10, np.eye(4))
    buf.set_transform('base', 'camera', 0, np.eye(4), static=True)
    buf.clear()
    assert buf.frames() == ['base', 'camera']
    buf.set_transform('odom', 'base', 5, np.eye(4))   # an older timeline is accepted again
    assert buf.can_transform('odom', 'camera', 5)


def _fake_site(path, member_paths):
    manifest = {'maps': [{'name': f'm{i}', 'path': p} for i, p in enumerate(member_paths)]}
    header = json.dumps({'__metadata__': {'scene_reloc_site': json.dumps(manifest)}}).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(header)) + header)


def test_map_root_confines_paths_and_symlinks_and_site_members(tmp_path):
    root = tmp_path / 'maps'
    root.mkdir()
    (root / 'a.map').write_bytes(b'x' * 100)
    outside = tmp_path / 'secret.map'
    outside.write_bytes(b'y' * 10)
    os.symlink(outside, root / 'link.map')
    assert check_map_path('a.map', str(root)) == str(root / 'a.map')   # relative to map_root
    assert check_map_path(str(root / 'a.map'), str(root)) == str(root / 'a.map')
    for bad in (str(outside), '../secret.map', str(root / 'link.map')):
        with pytest.raises(MapPathError, match='outside map_root'):
            check_map_path(bad, str(root))
    assert check_map_path(str(outside)) == str(outside)                # no root: anywhere
    _fake_site(root / 'good.site', ['a.map'])
    assert check_map_path('good.site', str(root))
    _fake_site(root / 'bad.site', ['a.map', '../secret.map'])
    with pytest.raises(MapPathError, match='map ../secret.map of site'):
        check_map_path('bad.site', str(root))
    with pytest.raises(MapPathError, match='not found'):
        check_map_path('missing.map', str(root))
    with pytest.raises(MapPathError, match='empty'):
        check_map_path('', str(root))


def test_oversized_map_is_refused_before_reading(tmp_path):
    big = tmp_path / 'big.map'
    with open(big, 'wb') as f:
        f.truncate(50_000_000)      # sparse: 50 MB that are never read
    with pytest.raises(MapPathError, match='50.0 MB, more than the limit of 10.0 MB'):
        check_map_path(str(big), max_bytes=10_000_000)
    assert check_map_path(str(big), max_bytes=0)


def test_an_image_is_paired_with_the_camera_info_of_its_stamp():
    from scene_reloc.ros.camera_pairing import CalibrationPairing
    pairing = CalibrationPairing(wait_s=0.05)
    old, new = object(), object()
    # Unpaired (stamps never matched yet): the latest valid model when the image came.
    assert pairing.calibration_for(5, old) is old
    pairing.on_info(10, new)
    pairing.on_image(10)
    assert pairing.paired
    assert pairing.calibration_for(10, old) is new
    # Its own CameraInfo was invalid: refused, even though an older valid one is at hand.
    pairing.on_image(20)
    pairing.on_info(20, None, 'K has NaN')
    with pytest.raises(ValueError, match='invalid.*K has NaN'):
        pairing.calibration_for(20, new)
    # Its CameraInfo never comes (lost): after the wait, the latest valid one.
    pairing.on_image(30)
    assert pairing.calibration_for(30, new) is new

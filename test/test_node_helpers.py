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

"""The node's pure parts: parameter table and validation, gating, keep-latest, covariance."""

import ast
import os
import threading
import time

import numpy as np
import yaml

from scene_reloc.geometry import rotvec_to_matrix
from scene_reloc.pose_gate import covariance_to_body, MapSelectionGate, OdometryConsistencyGate
from scene_reloc.ros.keep_latest import KeepLatestWorker
from scene_reloc.ros.params import NODE_NAME, PARAMETERS, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = rotvec_to_matrix(np.asarray(rotvec, float))
    T[:3, 3] = t
    return T


def test_config_yaml_lists_every_parameter_with_its_default():
    cfg = yaml.safe_load(open(os.path.join(ROOT, 'config', 'reloc.yaml')))
    params = cfg[NODE_NAME]['ros__parameters']
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert value == PARAMETERS[name][0], name
        assert type(value) is type(PARAMETERS[name][0]), name


def test_launch_file_passes_what_the_node_declares():
    src = open(os.path.join(ROOT, 'launch', 'reloc.launch.py')).read()
    tree = ast.parse(src)
    args = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and getattr(n.targets[0], 'id', '') == 'ARGUMENTS')
    names = {elt.elts[0].value for elt in args.elts}
    assert names == {'scene_map', 'params_file', 'namespace', 'use_sim_time', 'autostart',
                     'log_level'}
    # Every launch argument that becomes a node parameter is one the node declares.
    assert {'scene_map', 'autostart'} <= set(PARAMETERS)
    assert f"name='{NODE_NAME}'" in src and "executable='reloc_node'" in src
    setup = open(os.path.join(ROOT, 'setup.py')).read()
    assert 'reloc_node = scene_reloc.ros.reloc_node:main' in setup


def test_invalid_parameter_values_are_rejected_with_a_reason():
    assert validate('publish_mode', 'map_to_odom') == ''
    assert 'one of' in validate('publish_mode', 'map_to_base')
    assert 'at least 4' in validate('min_inliers', 2)
    assert validate('min_inliers', 0) == ''        # the map's own setting
    assert 'whole number' in validate('min_inliers', 30.5)
    assert 'number' in validate('transform_tolerance', 'soon')
    assert 'not negative' in validate('transform_tolerance', -0.1)
    assert 'true or false' in validate('consistency_check', 1)
    assert 'empty' in validate('global_frame_id', '')
    assert validate('use_sim_time', True) == ''  # not ours to judge


def test_gate_rejects_a_jump_until_it_is_confirmed():
    gate = OdometryConsistencyGate(max_translation_m=0.2, max_rotation_deg=5, confirmations=3)
    assert gate.check(pose([0, 0, 0], [0, 0, 0]))[0]
    assert gate.check(pose([0, 0, 0.02], [0.05, 0, 0]))[0]       # small drift correction
    jumped = pose([0, 0, 0], [2, 0, 0])
    ok, why = gate.check(jumped)
    assert not ok and '1/3' in why
    assert gate.check(pose([0, 0, 0], [0.06, 0, 0]))[0]  # back home: accepted, count reset
    assert not gate.check(jumped)[0]
    assert not gate.check(jumped)[0]
    ok, why = gate.check(jumped)  # the third agreeing frame in a row
    assert ok and 'confirmed' in why
    np.testing.assert_allclose(gate.accepted, jumped)


def test_map_gate_follows_another_map_only_after_agreeing_frames():
    gate = MapSelectionGate(confirmations=3)
    assert gate.check('lab') == (True, '') and gate.current == 'lab'
    ok, why = gate.check('hall')
    assert not ok and '1/3' in why and gate.current == 'lab'
    assert gate.check('lab')[0]                  # back: the candidate is dropped
    assert not gate.check('hall')[0] and not gate.check('hall')[0]
    ok, why = gate.check('hall')
    assert ok and 'lab -> hall' in why and gate.current == 'hall'
    gate.reset()
    assert gate.current is None and gate.check('hall')[0]


def test_covariance_moves_to_the_body_frame_by_the_lever_arm():
    rng = np.random.default_rng(0)
    world_from_cam = pose([0.3, -0.2, 1.0], [1, 2, 0.5])
    cam_from_body = pose([0.1, 0, 0], [0.0, 0.3, -0.5])
    A = rng.normal(size=(6, 6)) * 0.01
    cov = A @ A.T
    # Monte Carlo: perturb the camera pose with that covariance, see where the body goes.
    samples = rng.multivariate_normal(np.zeros(6), cov, size=20000)
    bodies = []
    for s in samples:
        T = world_from_cam.copy()
        T[:3, :3] = rotvec_to_matrix(s[3:]) @ T[:3, :3]
        T[:3, 3] += s[:3]
        bodies.append((T @ cam_from_body)[:3, 3])
    mc = np.cov(np.array(bodies).T)
    pred = covariance_to_body(world_from_cam, cov, cam_from_body)
    np.testing.assert_allclose(pred[:3, :3], mc, atol=2e-6, rtol=0.05)
    np.testing.assert_allclose(pred[3:, 3:], cov[3:, 3:])


def test_keep_latest_drops_stale_frames_and_survives_errors():
    seen, errors = [], []
    gate = threading.Event()

    def process(item):
        gate.wait(5)
        if item == 'bad':
            raise RuntimeError('boom')
        seen.append(item)

    w = KeepLatestWorker(process, lambda item, e: errors.append((item, str(e))))
    w.submit(0)           # taken at once, blocks on the gate
    time.sleep(0.05)
    for i in range(1, 10):
        w.submit(i)       # each replaces the previous one
    gate.set()
    deadline = time.time() + 5
    while not w.idle() and time.time() < deadline:
        time.sleep(0.01)
    assert seen == [0, 9]
    assert w.dropped == 8 and w.submitted == 10
    w.submit('bad')
    w.submit(10)
    deadline = time.time() + 5
    while (not w.idle() or 10 not in seen) and time.time() < deadline:
        time.sleep(0.01)
    assert 10 in seen  # the worker outlived the error (if it saw 'bad' at all)
    assert all(item == 'bad' for item, _ in errors)
    w.stop()


def test_loading_a_map_applies_the_threads_parameter_to_torch(small_map):
    """`threads` caps torch's threads too (the heads; the backbone on torch / onednn)."""
    import torch

    from scene_reloc.ros.node_maps import NodeMaps
    from scene_reloc.ros.params import PARAMETERS as DEFAULTS

    class Maps(NodeMaps):
        def __init__(self, **given):
            self.values = {name: default for name, (default, _) in DEFAULTS.items()}
            self.values.update(given)

        def p(self, name):
            return self.values[name]

    before = torch.get_num_threads()
    try:
        reloc = Maps(device='cpu', threads=1)._load_map(small_map[0])
        assert torch.get_num_threads() == 1 and reloc.extractor.runtime == 'torch'
    finally:
        torch.set_num_threads(before)

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

"""The package anatomy ROS tools rely on, lint as ament applies it, and the layer boundary."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_package_xml_is_format3_ament_python():
    root = ET.parse(os.path.join(ROOT, 'package.xml')).getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'scene_reloc'
    assert root.find('export/build_type').text == 'ament_python'
    deps = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'geometry_msgs', 'tf2_msgs'} <= deps
    assert root.findall('test_depend')


def test_ament_python_layout():
    for path in ('setup.py', 'setup.cfg', 'resource/scene_reloc', 'scene_reloc/__init__.py',
                 'scene_reloc/ros/__init__.py', 'training/__init__.py', 'launch', 'config',
                 'bench', 'README.md', 'Makefile', '.ci/run'):
        assert os.path.exists(os.path.join(ROOT, path)), path
    cfg = open(os.path.join(ROOT, 'setup.cfg')).read()
    assert 'install_scripts=$base/lib/scene_reloc' in cfg
    assert 'make test' in open(os.path.join(ROOT, '.ci', 'run')).read()


def test_lint_matches_ament_rules():
    """Ruff configured as ament_flake8 + ament_pep257 + ament_copyright (see ruff.toml)."""
    ruff = os.path.join(os.path.dirname(sys.executable), 'ruff')
    r = subprocess.run([ruff, 'check', '--no-cache', ROOT], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_python_file_has_the_licence_header():
    missing = []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if not x.startswith('.') and x not in ('build', 'install',
                                                                         'log', 'out')]
        for f in files:
            if f.endswith('.py'):
                head = open(os.path.join(d, f)).read(300)
                if 'Licensed under the Apache License, Version 2.0' not in head:
                    missing.append(os.path.relpath(os.path.join(d, f), ROOT))
    assert not missing, missing


def _runs_in_a_fresh_interpreter(code):
    r = subprocess.run([sys.executable, '-c', code + '\nprint("ok")'], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr


def test_core_imports_without_ros_or_training():
    _runs_in_a_fresh_interpreter(
        'import sys, importlib, pkgutil, scene_reloc\n'
        'for m in pkgutil.walk_packages(scene_reloc.__path__, "scene_reloc."):\n'
        '    if not m.name.startswith("scene_reloc.ros"):\n'
        '        importlib.import_module(m.name)\n'
        'bad = [m for m in sys.modules if m.split(".")[0] in ("rclpy", "scene_reloc_training")'
        ' or m.endswith("_msgs")]\n'
        'assert not bad, bad')


def test_core_does_not_probe_gpu_at_import():
    _runs_in_a_fresh_interpreter(
        'import torch\n'
        'torch.cuda.is_available = lambda: (_ for _ in ()).throw(RuntimeError("probed"))\n'
        'import scene_reloc.relocalizer, scene_reloc.backbones')


def test_training_runs_without_pycolmap_or_ros():
    # A GPU training machine has PyTorch but neither pycolmap nor ROS: pretrain, meta-train and
    # memorize-with-depth must get through their imports there (pycolmap is for RGB-only).
    _runs_in_a_fresh_interpreter(
        'import sys\n'
        'for m in ("pycolmap", "rosbags", "rclpy"):\n'
        '    sys.modules[m] = None\n'
        'import scene_reloc_training.cli.pretrain, scene_reloc_training.cli.meta\n'
        'import scene_reloc_training.learn.pretrain_backbone\n'
        'import scene_reloc_training.learn.meta_train\n'
        'import scene_reloc_training.memorize.memorize_scene\n'
        'import scene_reloc_training.memorize.pose_refinement as pr\n'
        'import scene_reloc_training.memorize.triangulation as tr\n'
        # where it is needed, a missing pycolmap says what to do, before any work
        'calls = ((lambda: pr.refine_poses([], [], [], [], None), "--refine-poses"),\n'
        '         (lambda: tr.triangulated_candidates([], [], [], []), "without depth"))\n'
        'for call, what in calls:\n'
        '    try:\n'
        '        call()\n'
        '    except ImportError as e:\n'
        '        assert "pip install pycolmap" in str(e) and what in str(e), e\n'
        '    else:\n'
        '        raise AssertionError("no ImportError")')

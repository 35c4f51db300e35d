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

"""A ROS install's build: colcon builds the package, and the node runs from the install space."""

import glob
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import types

import pytest
from ros_harness import Listener, ros_env, stop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLCON = os.path.join(os.path.dirname(sys.executable), 'colcon')
DOMAIN = 90 + os.getpid() % 10   # test_node_dds uses 40-89
PKG = 'scene_reloc'
# What a build may leave in the source tree (all gitignored, so `git status` would not show it).
BUILD_LEFTOVERS = ('build', 'install', 'log', '*.egg-info', 'training/*.egg-info')
SITE = os.path.relpath(sysconfig.get_paths()['purelib'], sys.prefix)   # lib/python3.X/site-...


def source_tree_packages():
    """Return every Python package of the source tree under its installed name."""
    found = set()
    for src, name in ((os.path.join(ROOT, 'scene_reloc'), 'scene_reloc'),
                      (os.path.join(ROOT, 'training'), 'scene_reloc_training')):
        for d, dirs, files in os.walk(src):
            dirs[:] = [x for x in dirs if x != '__pycache__']
            if '__init__.py' in files:
                rel = os.path.relpath(d, src)
                found.add(name if rel == '.' else name + '.' + rel.replace(os.sep, '.'))
    return found


def leftovers():
    return {p for pattern in BUILD_LEFTOVERS for p in glob.glob(os.path.join(ROOT, pattern))}


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """Build the package with colcon in a tmp workspace; return (workspace, sourced env)."""
    ws = tmp_path_factory.mktemp('colcon_ws')
    (ws / 'src').mkdir()
    # src/scene_reloc -> the repo: colcon stops crawling at the package, never reaches .venv.
    os.symlink(ROOT, ws / 'src' / PKG)
    env = ros_env(DOMAIN)
    env['COLCON_HOME'] = str(ws / 'colcon_home')   # no user defaults (e.g. symlink-install)
    before = leftovers()
    r = subprocess.run(
        [COLCON, '--log-base', str(ws / 'log'), 'build', '--packages-select', PKG,
         '--base-paths', str(ws / 'src'), '--build-base', str(ws / 'build'),
         '--install-base', str(ws / 'install'), '--event-handlers', 'console_direct-'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    assert leftovers() == before, f'colcon wrote into the repo: {leftovers() - before}'
    # What a user gets from `source install/setup.bash` (colcon-bash is not installed here,
    # the POSIX setup.sh does the same).
    dump = subprocess.run(['bash', '-c', '. "$1" && exec "$2" -c "$3"', '_',
                           str(ws / 'install' / 'setup.sh'), sys.executable,
                           'import json, os; print(json.dumps(dict(os.environ)))'],
                          env=env, cwd=ws, capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    return ws, json.loads(dump.stdout.splitlines()[-1])


def test_install_space_is_complete(workspace):
    ws, env = workspace
    prefix = ws / 'install' / PKG
    node = prefix / 'lib' / PKG / 'reloc_node'
    assert node.is_file() and os.access(node, os.X_OK)
    for path in ('share/scene_reloc/launch/reloc.launch.py', 'share/scene_reloc/config/reloc.yaml',
                 'share/scene_reloc/package.xml',
                 'share/ament_index/resource_index/packages/scene_reloc'):
        assert (prefix / path).is_file(), path
    # Not a symlink install: the installed files are copies, not links into the repo.
    assert not os.path.islink(prefix / 'share/scene_reloc/package.xml')
    site = prefix / SITE
    installed = {os.path.relpath(os.path.dirname(p), site).replace(os.sep, '.')
                 for p in glob.glob(str(site / '**' / '__init__.py'), recursive=True)}
    tree = source_tree_packages()
    assert installed == tree, \
        f'setup.py leaves out {tree - installed}, installs {installed - tree} not in the tree'
    shipped = {os.path.basename(p) for p in glob.glob(
        os.path.join(ROOT, 'training', 'pretrained', '*.safetensors'))}
    assert shipped and shipped <= set(os.listdir(site / 'scene_reloc_training' / 'pretrained'))
    assert env['PYTHONPATH'].split(os.pathsep)[0] == str(site)
    assert str(prefix) in env['AMENT_PREFIX_PATH'].split(os.pathsep)


def test_modules_import_from_install_space(workspace):
    """Import every package and the entry points in the sourced environment, as the node does."""
    ws, env = workspace
    # The venv's editable finder maps scene_reloc to the repo; it sits after sys.path, so a
    # module missing from the install space would come silently from the repo: check each one.
    code = ('import importlib, json, pkgutil\n'
            'from ament_index_python.packages import get_package_share_directory\n'
            'files = {}\n'
            'for top in ("scene_reloc", "scene_reloc_training"):\n'
            '    pkg = importlib.import_module(top)\n'
            '    files[top] = pkg.__file__\n'
            '    for m in pkgutil.walk_packages(pkg.__path__, top + "."):\n'
            '        if m.ispkg:\n'
            '            files[m.name] = importlib.import_module(m.name).__file__\n'
            'for m in ("scene_reloc.ros.reloc_node", "scene_reloc_training.cli"):\n'
            '    files[m] = importlib.import_module(m).__file__\n'
            'print(json.dumps({"files": files, '
            '"share": get_package_share_directory("scene_reloc")}))\n')
    r = subprocess.run([sys.executable, '-c', code], env=env, cwd=ws, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-5000:]
    out = json.loads(r.stdout.splitlines()[-1])
    site = str(ws / 'install' / PKG / SITE) + os.sep
    outside = {m: f for m, f in out['files'].items() if not f.startswith(site)}
    assert not outside, outside
    assert source_tree_packages() <= set(out['files'])
    assert out['share'] == str(ws / 'install' / PKG / 'share' / PKG)


def _recording_module(name, made):
    """Return a stand-in module whose every attribute is a class recording its construction."""
    module = types.ModuleType(name)

    def getattr_(attr):
        return type(attr, (), {'__init__': lambda self, *a, **kw: made.append((attr, a, kw))})
    module.__getattr__ = getattr_
    return module


def test_launch_file_uses_installed_config(workspace, monkeypatch):
    """Run the installed launch file against stand-ins for launch (not on PyPI)."""
    ws, env = workspace
    share = ws / 'install' / PKG / 'share' / PKG
    path = share / 'launch' / 'reloc.launch.py'
    compile(path.read_text(), str(path), 'exec')
    made = []
    for name in ('launch', 'launch.actions', 'launch.substitutions', 'launch_ros',
                 'launch_ros.actions'):
        monkeypatch.setitem(sys.modules, name, _recording_module(name, made))
    monkeypatch.setenv('AMENT_PREFIX_PATH', env['AMENT_PREFIX_PATH'])
    spec = importlib.util.spec_from_file_location('installed_reloc_launch', path)
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    launch_file.generate_launch_description()
    defaults = {a[0]: kw.get('default_value') for cls, a, kw in made
                if cls == 'DeclareLaunchArgument'}
    assert defaults['params_file'] == str(share / 'config' / 'reloc.yaml')
    nodes = [kw for cls, _, kw in made if cls == 'LifecycleNode']
    assert len(nodes) == 1 and nodes[0]['package'] == PKG
    assert (ws / 'install' / PKG / 'lib' / PKG / nodes[0]['executable']).is_file()


@pytest.fixture
def listener():
    lst = Listener(DOMAIN)
    yield lst
    lst.close()


def test_node_from_install_space_becomes_active(workspace, small_map, listener):
    ws, env = workspace
    prefix = ws / 'install' / PKG
    # The arguments the launch file passes, with the installed parameter file.
    args = [str(prefix / 'lib' / PKG / 'reloc_node'), '--ros-args', '--params-file',
            str(prefix / 'share' / PKG / 'config' / 'reloc.yaml'), '-p',
            f'scene_map:={small_map[0]}', '-r', '/tf:=tf', '-r', '/tf_static:=tf_static']
    log_path = ws / 'node.log'
    with open(log_path, 'w') as log:
        node = subprocess.Popen(args, env=env, cwd=ws, stdout=log, stderr=subprocess.STDOUT)
    try:
        listener.wait_for(lambda: node.poll() is not None or any(
            'waiting for images' in m for m in listener.diag_messages()), 60)
        assert node.poll() is None, log_path.read_text()
        assert any('waiting for images' in m for m in listener.diag_messages()), \
            log_path.read_text()
    finally:
        stop(node)
    assert node.returncode == 0, log_path.read_text()

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

from glob import glob

from setuptools import find_packages, setup

package_name = 'scene_reloc'
# Every package under scene_reloc/ and training/ (installed as scene_reloc_training), found rather
# than listed, so that a new subpackage cannot be left out of a colcon or pip install.
PACKAGES = ([package_name] + [f'{package_name}.{p}' for p in find_packages(package_name)]
            + ['scene_reloc_training']
            + [f'scene_reloc_training.{p}' for p in find_packages('training')])

setup(
    name=package_name,
    version='0.1.0',
    packages=PACKAGES,
    # The offline tooling lives in training/ and imports the core; it installs under a name of
    # its own so that nothing generic like "training" lands in site-packages.
    package_dir={'scene_reloc_training': 'training'},
    # Weights the project trained itself on synthetic scenes (see training/pretrained/).
    package_data={'scene_reloc_training': ['pretrained/*.safetensors', 'pretrained/*.pth',
                                           'pretrained/*.json', 'pretrained/*.md']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,   # the shipped weights are read from files
    maintainer='scene_reloc maintainers',
    maintainer_email='maintainers@scene-reloc.invalid',
    description='Single-image camera relocalization in a known scene (scene region '
                'classification).',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'scene-reloc = scene_reloc_training.cli:main',
            'reloc_node = scene_reloc.ros.reloc_node:main',
        ],
    },
)

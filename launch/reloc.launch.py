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
Start the relocalization node.

  ros2 launch scene_reloc reloc.launch.py scene_map:=/path/to/scene.map

Arguments: scene_map, params_file (default: the package's config/reloc.yaml), namespace,
use_sim_time, autostart, log_level. /tf and /tf_static are remapped to the relative tf and
tf_static, so that a namespace gives the node its own TF topics, as Nav2 does.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

# Launch arguments: (name, default, description). Kept in step with the node by a test.
ARGUMENTS = (
    ('scene_map', '', 'scene map file (scene-reloc memorize) or site file (scene-reloc site)'),
    ('params_file', None, 'parameter file (default: the package config/reloc.yaml)'),
    ('namespace', '', 'namespace of the node and its topics'),
    ('use_sim_time', 'false', 'use /clock (bag replay with --clock)'),
    ('autostart', 'true', 'configure and activate without a lifecycle manager'),
    ('log_level', 'info', 'logging level'),
)
REMAPPINGS = [('/tf', 'tf'), ('/tf_static', 'tf_static')]


def generate_launch_description():
    share = get_package_share_directory('scene_reloc')
    default_params = os.path.join(share, 'config', 'reloc.yaml')
    args = [DeclareLaunchArgument(name, default_value=default_params if default is None
                                  else default, description=doc)
            for name, default, doc in ARGUMENTS]
    node = LifecycleNode(
        package='scene_reloc', executable='reloc_node', name='reloc_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'scene_map': LaunchConfiguration('scene_map'),
            'use_sim_time': LaunchConfiguration('use_sim_time'),
            'autostart': LaunchConfiguration('autostart')}],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        remappings=REMAPPINGS)
    return LaunchDescription(args + [node])

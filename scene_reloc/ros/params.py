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
The node's parameters: one table (name, default, description) and their validation.

``config/reloc.yaml``, the launch file and the node all follow this table; a test keeps them
consistent. No rclpy import here, so the table is usable (and tested) without ROS.
"""

NODE_NAME = 'reloc_node'

PARAMETERS = {
    'scene_map': ('', 'scene map file (scene-reloc memorize) or site file (scene-reloc site); '
                      'can be switched at runtime, the new one is validated first'),
    'map_root': ('', 'if set, scene_map (relative paths: inside it) and the maps of a site must '
                     'lie in this folder; others are refused before they are read'),
    'max_map_mb': (1024.0, 'map or site files larger than this (MB, each file) are refused '
                           'before they are read; 0: no limit'),
    'map_switch_frames': (3, 'site: consecutive frames that must place the camera in another '
                             'map before the node follows it'),
    'backbone_weights': ('', 'backbone weights file, only if the one recorded in the map moved'),
    'device': ('auto', 'auto | cpu | cuda: where the networks run'),
    'runtime': ('auto', 'auto | torch | onnxruntime | onednn: what runs the backbone (auto, '
                        'on the CPU: onednn bf16 where it has AMX, else ONNX Runtime where '
                        'installed, 3-6x faster than torch there; torch on CUDA)'),
    'threads': (0, 'CPU threads for the networks (0: one per core); fewer '
                   'leave cores to Nav2'),
    'image_transport': ('raw', 'raw (sensor_msgs/Image on "image") or compressed '
                               '(sensor_msgs/CompressedImage on "image/compressed")'),
    'qos_reliability': ('best_effort', 'best_effort (as camera drivers publish) | reliable'),
    'qos_depth': (1, 'subscription queue depth for image and camera_info'),
    'publish_mode': ('map_to_odom', 'map_to_odom (REP-105, composed with odom->camera from '
                                    '/tf) | map_to_camera (rigs without odometry)'),
    'global_frame_id': ('map', 'the scene map frame (a site publishes each map in its own '
                               'frame: its frame_id, or its name)'),
    'odom_frame_id': ('odom', 'odometry frame (map_to_odom mode)'),
    'camera_frame_id': ('', 'camera optical frame; empty: the image header frame_id'),
    'base_frame_id': ('', "if set, ~/pose is this frame's pose (camera->base from /tf); "
                          'empty: the camera pose'),
    'transform_tolerance': (0.1, 'seconds the published TF is post-dated by, as AMCL'),
    'publish_tf': (True, 'publish the map TF; false when a robot_localization EKF in '
                         'world_frame map owns map->odom and fuses ~/pose'),
    'tf_publish_rate': (20.0, 'Hz at which the last accepted map TF is republished (post-dated '
                              'by transform_tolerance), between fixes too; 0: only on fixes'),
    'transform_timeout': (0.5, 'seconds to wait for odom->camera at the image stamp to arrive '
                               'on /tf before giving the frame up'),
    'min_inliers': (0, "a pose needs at least this many PnP inliers (0: the map's own setting, "
                       '20 for region maps, 12 for landmark maps)'),
    'max_reprojection_error': (0.0, 'a pose needs a median inlier reprojection error below this '
                                    "(pixels; 0: the map's own setting)"),
    'max_rate': (0.0, 'process at most this many frames per second (0: as fast as possible)'),
    'image_timeout': (5.0, 'seconds without an image (while active) before /diagnostics warns, '
                           'naming the topic and the QoS to check; 0: never'),
    'mode': ('continuous', 'continuous (every frame, rate-limited by max_rate) | on_request '
                           '(the camera is subscribed only from ~/relocalize or a pose hint '
                           'until a fix or request_timeout; idle otherwise)'),
    'request_timeout': (10.0, 'on_request: seconds a request keeps trying without a fix'),
    'lost_timeout': (10.0, 'seconds without an accepted fix after which ~/localized turns '
                           'false; 0: never'),
    'latch_pose': (False, '~/pose as transient local (a late joiner gets the last pose)'),
    'publish_initial_pose': (False, 'hand off to AMCL: on lost -> localized and after '
                                    '~/relocalize, send the base pose on initialpose until '
                                    'amcl_pose agrees (needs base_frame_id)'),
    'initial_pose_retries': (5, 'hand-off: initialpose messages sent at most per hand-off'),
    'initial_pose_retry_period': (1.0, 'hand-off: seconds between initialpose messages'),
    'handoff_max_translation': (0.25, 'hand-off: amcl_pose within this distance (m) agrees'),
    'handoff_max_yaw': (10.0, 'hand-off: amcl_pose within this yaw (deg) agrees'),
    'use_pose_hint': (True, "take others' initialpose (rviz 2D Pose Estimate) as a prior: a "
                            'fix outside its covariance is held back unless confirmed'),
    'hint_confirmations': (3, 'pose hint: consecutive agreeing fixes that overrule the hint'),
    'time_jump_threshold': (1.0, 'seconds /tf, images or the clock may go back before the node '
                                 'treats it as a time jump (bag loop) and clears its buffers'),
    'consistency_check': (False, 'reject a map->odom jump that odometry says did not happen'),
    'max_jump_translation': (0.5, 'consistency check: largest accepted map->odom change (m)'),
    'max_jump_rotation': (15.0, 'consistency check: largest accepted map->odom change (deg)'),
    'jump_confirmations': (3, 'consistency check: consecutive agreeing frames that accept a jump'),
    'publish_markers': (True, 'publish ~/markers (scene points, inliers) for rviz'),
    'max_marker_points': (20000, 'scene points in ~/markers at most'),
    'diagnostics_period': (1.0, 'seconds between /diagnostics messages'),
    'autostart': (True, 'configure and activate at start-up (no lifecycle manager needed)'),
}

_CHOICES = {
    'device': ('auto', 'cpu', 'cuda'),
    'runtime': ('auto', 'torch', 'onnxruntime', 'onednn'),
    'image_transport': ('raw', 'compressed'),
    'qos_reliability': ('best_effort', 'reliable'),
    'publish_mode': ('map_to_odom', 'map_to_camera'),
    'mode': ('continuous', 'on_request'),
}

_MINIMA = {
    'qos_depth': (1, 'at least 1'),
    'threads': (0, "not negative (0: ONNX Runtime's default, one per core)"),
    'transform_tolerance': (0.0, 'not negative'),
    'tf_publish_rate': (0.0, 'not negative'),
    'transform_timeout': (0.0, 'not negative'),
    'min_inliers': (0, "0 (the map's setting) or at least 4 (PnP needs 4 points)"),
    'max_reprojection_error': (0.0, 'not negative'),
    'max_rate': (0.0, 'not negative'),
    'image_timeout': (0.0, 'not negative'),
    'max_jump_translation': (0.0, 'not negative'),
    'max_jump_rotation': (0.0, 'not negative'),
    'jump_confirmations': (1, 'at least 1'),
    'map_switch_frames': (1, 'at least 1'),
    'max_map_mb': (0.0, 'not negative'),
    'request_timeout': (1e-3, 'positive'),
    'lost_timeout': (0.0, 'not negative'),
    'initial_pose_retries': (1, 'at least 1'),
    'initial_pose_retry_period': (1e-3, 'positive'),
    'handoff_max_translation': (0.0, 'not negative'),
    'handoff_max_yaw': (0.0, 'not negative'),
    'hint_confirmations': (1, 'at least 1'),
    'time_jump_threshold': (1e-3, 'positive'),
    'max_marker_points': (0, 'not negative'),
    'diagnostics_period': (1e-3, 'positive'),
}


def validate(name, value):
    """Return '' when ``value`` is acceptable for ``name``, else the reason it is not."""
    if name not in PARAMETERS:
        return ''  # not ours (use_sim_time, qos overrides, ...)
    default = PARAMETERS[name][0]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            return f'{name} must be true or false, got {value!r}'
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f'{name} must be a number, got {value!r}'
        if isinstance(default, int) and not isinstance(default, bool) and \
                not float(value).is_integer():
            return f'{name} must be a whole number, got {value!r}'
    elif not isinstance(value, str):
        return f'{name} must be a string, got {value!r}'
    if name in _CHOICES and value not in _CHOICES[name]:
        return f'{name} must be one of {", ".join(_CHOICES[name])}, got {value!r}'
    if name in _MINIMA and value < _MINIMA[name][0]:
        return f'{name} must be {_MINIMA[name][1]}, got {value!r}'
    if name == 'min_inliers' and 0 < value < 4:
        return f'{name} must be {_MINIMA[name][1]}, got {value!r}'
    if name in ('global_frame_id', 'odom_frame_id') and not value:
        return f'{name} must not be empty'
    return ''

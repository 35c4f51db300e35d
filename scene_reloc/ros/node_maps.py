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
The relocalization node's map and parameters: load a map or a site, switch it at runtime.

A mixin of :class:`~scene_reloc.ros.reloc_node.RelocNode`. A new ``scene_map`` is checked
first (``map_root`` confinement, ``max_map_mb``: refused before a byte is read), then loaded and
warmed up in a background thread while the old map keeps localizing, then swapped in with one
assignment under the node's lock. A load that fails keeps the old map, says so on /diagnostics
and puts the parameter back.
"""

import threading
import time

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from scene_reloc.map_files import check_map_path, MapPathError
from scene_reloc.ros.params import validate

READ_ONLY = ('map_root', 'max_map_mb', 'mode', 'publish_initial_pose', 'use_pose_hint',
             'time_jump_threshold')


class NodeMaps:
    """Loading and switching the scene map (or site); parameter changes at runtime."""

    def _checked_path(self, path):
        """Return the path to open, or raise MapPathError (map_root, size) before reading."""
        if not path:
            raise MapPathError('parameter scene_map is empty: set it to a map file from '
                               'scene-reloc memorize (or a site from scene-reloc site)')
        return check_map_path(path, self.p('map_root'), self.p('max_map_mb') * 1e6)

    def _load_map(self, path):
        from scene_reloc.site import open_localizer  # torch import only when needed
        if self.p('threads') > 0:
            # torch (the heads, and the backbone on the torch / onednn runtimes) uses this
            # process's intra-op threads; ONNX Runtime gets its own below.
            import torch
            torch.set_num_threads(self.p('threads'))
        reloc = open_localizer(path, self.p('backbone_weights') or None, self.p('device'),
                               runtime=self.p('runtime'), threads=self.p('threads'))
        for name in ('min_inliers', 'max_reprojection_error'):
            if self.p(name) > 0:
                self._set_map_setting(reloc, name, self.p(name))
        h, w = 480, 640
        reloc.localize(np.zeros((h, w, 3), np.uint8), np.array(
            [[500.0, 0, w / 2], [0, 500.0, h / 2], [0, 0, 1]]))  # warm-up
        return reloc

    def on_set_parameters(self, params):
        for prm in params:
            reason = validate(prm.name, prm.value)
            if not reason and prm.name in READ_ONLY and not self._reverting:
                reason = f'{prm.name} is read-only at runtime: set it when the node starts'
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for prm in params:
            if prm.name == 'scene_map' and self.reloc is not None and not self._reverting:
                if self._loading is not None and self._loading.is_alive():
                    return SetParametersResult(successful=False, reason=(
                        'another scene map is still loading: try again when /diagnostics no '
                        'longer says loading'))
                try:
                    path = self._checked_path(prm.value)
                except MapPathError as e:
                    return SetParametersResult(successful=False,
                                               reason=f'scene map rejected: {e}')
                # Loading takes seconds (network, warm-up): the old map keeps serving until
                # the new one is ready, then they swap in one assignment.
                self._loading = threading.Thread(target=self._switch_map, daemon=True,
                                                 args=(path, prm.value), name='map-loader')
                self._loading.start()
            elif prm.name in ('min_inliers', 'max_reprojection_error') and self.reloc and \
                    prm.value > 0:
                self._set_map_setting(self.reloc, prm.name, prm.value)
            elif prm.name == 'map_switch_frames':
                self.map_gate.confirmations = int(prm.value)
            elif prm.name == 'hint_confirmations':
                self.hint_gate.confirmations = int(prm.value)
        return SetParametersResult(successful=True)

    def _switch_map(self, path, requested):
        """Load ``path`` in this (background) thread; swap it in, or keep the old map."""
        self.get_logger().info(f'loading scene map {path} in the background')
        try:
            new = self._load_map(path)
        except Exception as e:  # noqa: BLE001 - refuse the switch, keep the old map
            message = f'scene map {requested} rejected: {e}; still on {self._map_path}'
            self.get_logger().error(message)
            self._set_status('error', message)
            self._revert_scene_map(requested)
            return
        old_frame = (self.last_tf.get() or (None,))[0]
        with self._lock:
            self.reloc, self._map_path, self._map_param = new, path, requested
        frames = set(getattr(new, 'frame_ids', {}).values()) or {self.p('global_frame_id')}
        if old_frame not in frames:
            self.last_tf.clear()     # its frame does not exist in the new map
            self._reset_handoff()
        if self.gate is not None:
            self.gate.reset()
        self.map_gate.reset()
        del new
        release_freed_memory()   # the old map's tensors (tens of MB) go back to the system
        self.get_logger().info(f'switched to scene map {path}')
        self._set_status('warn', f'switched to scene map {path}')
        if self.p('publish_markers') and self.worker is not None:
            self._publish_scene_markers()

    def _revert_scene_map(self, requested):
        """Put the scene_map parameter back to the map still in use."""
        # The load can fail before the parameter change that started it has been applied
        # (this thread starts inside the parameter callback): wait for it, or the late
        # commit would overwrite the revert.
        deadline = time.monotonic() + 2.0
        while self.p('scene_map') != requested and time.monotonic() < deadline:
            time.sleep(0.01)
        self._reverting = True
        try:
            self.set_parameters([Parameter('scene_map', Parameter.Type.STRING,
                                           self._map_param)])
        finally:
            self._reverting = False

    @staticmethod
    def _set_map_setting(reloc, name, value):
        """Override a gating setting of the map, or of every map of a site."""
        for m in getattr(reloc, 'maps', [reloc]):
            setattr(m.config, name, type(getattr(m.config, name))(value))

    def _map_frames(self):
        """Return the TF frames the node publishes poses in (a site has one per map)."""
        frames = getattr(self.reloc, 'frame_ids', None)
        return set(frames.values()) if frames else {self.p('global_frame_id')}

    def _frame_of(self, reloc, map_name):
        """Name the TF frame of a pose: global_frame_id, or a site map's own frame."""
        frames = getattr(reloc, 'frame_ids', None)
        if not frames:
            return self.p('global_frame_id')
        return frames.get(map_name) or next(iter(frames.values()))


def release_freed_memory():
    """Collect the old map and hand freed heap back to the OS (glibc keeps it otherwise)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass   # not glibc: nothing to do

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

A mixin of :class:`~scene_reloc.ros.reloc_node.RelocNode`: a new ``scene_map`` is loaded and
validated before it replaces the old one, which stays when the new one fails.
"""

import numpy as np
from rcl_interfaces.msg import SetParametersResult

from scene_reloc.ros.params import validate


class NodeMaps:
    """Loading and switching the scene map (or site); parameter changes at runtime."""

    def _load_map(self, path):
        from scene_reloc.site import open_localizer  # torch import only when needed
        if not path:
            raise ValueError('parameter scene_map is empty: set it to a map file from '
                             'scene-reloc memorize (or a site from scene-reloc site)')
        reloc = open_localizer(path, self.p('backbone_weights') or None, self.p('device'))
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
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for prm in params:
            if prm.name == 'scene_map' and self.reloc is not None:
                try:
                    new = self._load_map(prm.value)
                except Exception as e:  # noqa: BLE001 - refuse the switch, keep the old map
                    return SetParametersResult(successful=False,
                                               reason=f'scene map rejected: {e}')
                with self._lock:
                    self.reloc = new
                self.last_tf.clear()     # its frame may not exist in the new map
                self.get_logger().info(f'switched to scene map {prm.value}')
                if self.gate is not None:
                    self.gate.reset()
                self.map_gate.reset()
            elif prm.name in ('min_inliers', 'max_reprojection_error') and self.reloc and \
                    prm.value > 0:
                self._set_map_setting(self.reloc, prm.name, prm.value)
            elif prm.name == 'map_switch_frames':
                self.map_gate.confirmations = int(prm.value)
        return SetParametersResult(successful=True)

    @staticmethod
    def _set_map_setting(reloc, name, value):
        """Override a gating setting of the map, or of every map of a site."""
        for m in getattr(reloc, 'maps', [reloc]):
            setattr(m.config, name, type(getattr(m.config, name))(value))

    def _frame_of(self, reloc, map_name):
        """Name the TF frame of a pose: global_frame_id, or a site map's own frame."""
        frames = getattr(reloc, 'frame_ids', None)
        if not frames:
            return self.p('global_frame_id')
        return frames.get(map_name) or next(iter(frames.values()))

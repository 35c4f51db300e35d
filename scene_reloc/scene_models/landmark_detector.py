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
Scene landmark detection (SLD): heatmap peaks of memorized 3D landmarks.

The head predicts one heatmap per landmark on the 1/8 grid; each confident peak is a 2D-3D
correspondence weighted by its confidence. With ``refinement='keypoints'`` a peak moves to
the keypoint within ``snap_radius_px`` whose descriptor best matches the landmark's stored
one (the peak is a few pixels off; a keypoint is sub-pixel), when that match is good enough.
"""

import numpy as np
import torch

from scene_reloc.landmark_head import LandmarkDetector, LandmarkHeadConfig
from scene_reloc.scene_models.base import (
    build_with_weights,
    Correspondences,
    FEATURES_GRID,
    FEATURES_KEYPOINTS,
    SceneModel,
)


class LandmarkDetectorModel(SceneModel):
    """The landmark heatmap ensemble with the landmarks' 3D positions and descriptors."""

    head_type = 'landmark_detector'
    required_tensors = ('landmarks.xyz',)

    def __init__(self, manifest, tensors, device):
        super().__init__(manifest, tensors, device)
        dev = self.device
        cfg = LandmarkHeadConfig(**manifest['head']['config'])
        state = self.head_state(tensors)
        # One module per head: check their number before building them (meta tensors cost
        # nothing, but a million modules do).
        heads = len({k.split('.')[1] for k in state if k.startswith('heads.')})
        if cfg.landmarks_per_head < 1 or cfg.num_landmarks < 1 or \
                -(-cfg.num_landmarks // cfg.landmarks_per_head) != heads:
            raise ValueError(f'the landmark head configuration ({cfg.num_landmarks} landmarks, '
                             f'{cfg.landmarks_per_head} per head) does not match its weights '
                             f'({heads} heads)')
        self.head = build_with_weights(lambda: LandmarkDetector(cfg), state, 'landmark head')
        self.head.eval().to(dev)
        self.points_xyz = torch.from_numpy(tensors['landmarks.xyz']).to(dev)
        desc = tensors.get('landmarks.desc')
        self.landmark_desc = None if desc is None else \
            torch.from_numpy(desc).to(dev).float() / 127.0

    def _snaps(self, config):
        return config.refinement == 'keypoints' and self.landmark_desc is not None

    def features_needed(self, config):
        return FEATURES_KEYPOINTS if self._snaps(config) else FEATURES_GRID

    @torch.inference_mode()
    def correspondences(self, features, image_hw, config, frames=None):
        xy, conf = self.head.detect(features.grid_desc)
        keep = conf >= config.min_landmark_confidence
        visible = self.visible_from(frames, len(self.points_xyz))
        if visible is not None:
            keep &= visible
        if self._snaps(config) and features.keypoints.shape[0]:
            d = torch.cdist(xy, features.keypoints)                       # (L, N)
            sim = self.landmark_desc @ features.keypoint_desc.T            # (L, N)
            sim = torch.where(d <= config.snap_radius_px, sim, torch.full_like(sim, -2.0))
            best, arg = sim.max(dim=1)
            snap = best >= config.min_similarity
            xy = torch.where(snap[:, None], features.keypoints[arg], xy)
        return Correspondences(xy[keep].cpu().numpy().astype(np.float64),
                               self.points_xyz[keep].cpu().numpy().astype(np.float64),
                               conf[keep].cpu().numpy().astype(np.float64))

    def map_points(self):
        return self.points_xyz.cpu().numpy()


SCENE_MODEL = LandmarkDetectorModel

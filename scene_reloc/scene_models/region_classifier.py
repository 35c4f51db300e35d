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
Scene region classification (SRC) with in-leaf keypoint matching.

The head predicts, for each keypoint, the most likely leaves of the map's hierarchical
partition of scene coordinates; the keypoint's descriptor is then matched against the few 3D
map points stored in those leaves (the leaf centre alone is a few centimetres off; the matched
point is not). With ``refinement='none'`` every 1/8 grid cell goes to its most likely leaf
centre instead (plain SRC).
"""

import numpy as np
import torch

from scene_reloc.backbones import grid_centres
from scene_reloc.partition import HierarchicalPartition
from scene_reloc.region_head import RegionClassifier, RegionHeadConfig
from scene_reloc.scene_models.base import (
    build_with_weights,
    Correspondences,
    FEATURES_KEYPOINTS,
    SceneModel,
)


class RegionClassifierModel(SceneModel):
    """The region classifier with its partition and in-leaf map points."""

    head_type = 'region_classifier'
    required_tensors = ('partition.centres_l1', 'partition.leaf_centres', 'points.xyz',
                        'points.desc', 'points.leaf_offsets')

    def __init__(self, manifest, tensors, device):
        super().__init__(manifest, tensors, device)
        dev = self.device
        head_cfg = RegionHeadConfig(**manifest['head']['config'])
        self.head = build_with_weights(lambda: RegionClassifier(head_cfg),
                                       self.head_state(tensors), 'region head')
        self.head.eval().to(dev)
        self.partition = HierarchicalPartition.from_tensors(tensors, head_cfg.k2)
        self.leaf_centres = torch.from_numpy(self.partition.leaf_centres).to(dev)
        self.points_xyz = torch.from_numpy(tensors['points.xyz']).to(dev)
        self.points_desc = torch.from_numpy(tensors['points.desc']).to(dev)
        self.leaf_offsets = torch.from_numpy(tensors['points.leaf_offsets']).to(dev)
        self._leaf_blocks()

    def _leaf_blocks(self):
        """Lay the map points out as (leaves, P, ...) blocks, P the most points in a leaf."""
        counts = self.leaf_offsets[1:] - self.leaf_offsets[:-1]
        self.leaf_counts = counts
        self.max_points_per_leaf = P = int(counts.max()) if counts.numel() else 0
        L, D = counts.shape[0], self.points_desc.shape[-1]
        ar = torch.arange(P, device=counts.device)
        valid = ar[None] < counts[:, None]                                  # (L, P)
        src = self.leaf_offsets[:-1, None] + ar[None]
        # A query gathers each candidate leaf's points as one contiguous block, already in
        # float32 (int8 / 127): converting the gathered blocks per query cost more than the
        # products (a 33 MB temporary at 2048 keypoints).
        self.leaf_desc = torch.zeros((L, P, D), dtype=torch.float32, device=ar.device)
        self.leaf_desc[valid] = self.points_desc[src[valid]].float() / 127.0
        self.leaf_xyz = torch.zeros((L, P, 3), dtype=self.points_xyz.dtype, device=ar.device)
        self.leaf_xyz[valid] = self.points_xyz[src[valid]]

    def features_needed(self, config):
        # Plain SRC uses only the grid, but takes it from the same pass as the keypoints so
        # that both modes see identical grid descriptors (as measured in the benchmarks).
        return FEATURES_KEYPOINTS

    @torch.inference_mode()
    def correspondences(self, features, image_hw, config, frames=None):
        allowed = self.visible_from(frames, self.leaf_centres.shape[0])
        if config.refinement == 'keypoints':
            return self._keypoint_matches(features, config, allowed)
        return self._centroid_matches(features, image_hw, config, allowed)

    def map_points(self):
        return self.points_xyz.cpu().numpy()

    def _keypoint_matches(self, feats, cfg, allowed=None):
        """Keypoints matched to the map points inside their predicted leaves."""
        desc = feats.keypoint_desc
        if desc.shape[0] == 0 or self.max_points_per_leaf == 0:
            return Correspondences(np.zeros((0, 2)), np.zeros((0, 3)))
        with self.head_autocast(cfg):
            leaf, prob = self.head.top_leaves(desc, cfg.top_regions, cfg.top_leaves, allowed)
        prob = prob.float()
        P = self.max_points_per_leaf
        sim = self._leaf_similarities(desc, leaf)                           # (N, T, P)
        valid = torch.arange(P, device=desc.device) < self.leaf_counts[leaf][..., None]
        valid &= (prob >= cfg.min_leaf_probability)[..., None]
        sim = torch.where(valid, sim, torch.full_like(sim, -2.0)).flatten(1)
        best, arg = sim.max(dim=1)
        keep = best >= cfg.min_similarity
        n = torch.nonzero(keep)[:, 0]
        xyz = self.leaf_xyz[leaf[n, arg[n] // P], arg[n] % P]
        return Correspondences(feats.keypoints[keep].cpu().numpy().astype(np.float64),
                               xyz.cpu().numpy().astype(np.float64),
                               scores=best[keep].cpu().numpy().astype(np.float64))

    def _leaf_similarities(self, desc_ND, leaf_NT, chunk=256):
        """Cosine similarities (N, T, P) of each keypoint with the points of its T leaves."""
        N, T = leaf_NT.shape
        P, D = self.leaf_desc.shape[1:]
        desc_ND = desc_ND.float()
        sim = torch.empty((N, T, P), dtype=torch.float32, device=desc_ND.device)
        # In chunks of keypoints: the gathered (chunk, T, P, D) block stays in cache.
        for s in range(0, N, chunk):
            cand = self.leaf_desc[leaf_NT[s:s + chunk]].reshape(-1, T * P, D)
            torch.matmul(cand, desc_ND[s:s + chunk, :, None],
                         out=sim[s:s + chunk].view(-1, T * P, 1))
        return sim

    def _centroid_matches(self, feats, image_hw, cfg, allowed=None):
        """Grid cells to their most likely leaf centre (plain SRC)."""
        hc, wc, d = feats.grid_desc.shape
        leaf, prob = self.head.top_leaves(feats.grid_desc.reshape(-1, d), 1, 1, allowed)
        keep = prob[:, 0] >= cfg.min_leaf_probability
        centres = self.leaf_centres[leaf[:, 0]]
        keep &= torch.isfinite(centres).all(1)
        xy = grid_centres(*image_hw).to(centres.device).reshape(-1, 2)
        return Correspondences(xy[keep].cpu().numpy().astype(np.float64),
                               centres[keep].cpu().numpy().astype(np.float64))


SCENE_MODEL = RegionClassifierModel

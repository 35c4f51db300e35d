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

The head predicts one heatmap per landmark on the 1/8 grid. The heatmap is a coarse prior (a
cell is 8 pixels); the precision comes from a keypoint. With ``refinement='keypoints'`` (the
default) every query keypoint looks at the ``top_landmarks`` landmarks whose heatmaps are
highest at its cell (at least ``min_landmark_confidence``) and takes the one whose stored
descriptors (those of the memorized keypoints that re-detected it) match its own best, if the
similarity reaches ``min_similarity``: the heatmaps say which landmarks can be here, the
descriptor says which one it is, and the keypoint says where, to a pixel (as the region
classifier's in-leaf matching). With ``refinement='none'`` every confident peak (refined to
sub-cell precision) is a correspondence, weighted in PnP by the heatmap value squared (SLD*'s
v^2: a peak's position is as uncertain as its heatmap is flat); keypoint correspondences are
not weighted (a keypoint is as precise whatever the classifier's probability, measured: dev-20
98.6 % unweighted vs 94.2 % weighted, the same 93 % on a validation split).
Format 1 maps are queried as they always were: each peak moves to the keypoint within
``snap_radius_px`` whose descriptor matches the landmark's, when one does.
"""

import numpy as np
import torch

from scene_reloc.backbones import GRID_STRIDE
from scene_reloc.landmark_head import (
    heatmap_peaks,
    LANDMARK_FORMATS,
    LandmarkDetector,
    LandmarkHeadConfig,
)
from scene_reloc.scene_map import SceneMapError
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
        if cfg.version not in LANDMARK_FORMATS:
            raise SceneMapError(
                f'landmark map format {cfg.version!r} is not one this scene_reloc reads '
                f'({", ".join(map(str, LANDMARK_FORMATS))}): it was written by a newer '
                'scene_reloc; update scene_reloc, or memorize the scene again with this one')
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
        # (L, K, D): descriptors of the keypoints that re-detected each landmark (format 2);
        # a format 1 map has one descriptor per landmark (or none: peaks only).
        obs = tensors.get('landmarks.observations')
        if obs is None and tensors.get('landmarks.desc') is not None:
            obs = tensors['landmarks.desc'][:, None]
        self.observations = None if obs is None else \
            torch.from_numpy(obs).to(dev).float() / 127.0

    def _snaps(self, config):
        return config.refinement == 'keypoints' and self.observations is not None

    def features_needed(self, config):
        return FEATURES_KEYPOINTS if self._snaps(config) else FEATURES_GRID

    @torch.inference_mode()
    def correspondences(self, features, image_hw, config, frames=None):
        visible = self.visible_from(frames, len(self.points_xyz))
        if self._snaps(config) and self.head.cfg.version >= 2:
            return self._verified_keypoints(features, config, visible)
        prob = self.head.probabilities(features.grid_desc.permute(2, 0, 1)[None].float())[0]
        xy, conf = heatmap_peaks(prob)
        keep = conf >= config.min_landmark_confidence
        if visible is not None:
            keep &= visible
        if self._snaps(config) and features.keypoints.shape[0]:
            # Format 1 maps, as they were queried: a peak moves to the keypoint within
            # snap_radius_px whose descriptor matches the landmark's, when one does.
            d = torch.cdist(xy, features.keypoints)                           # (L, N)
            sim = self.observations[:, 0] @ features.keypoint_desc.T           # (L, N)
            sim = torch.where(d <= config.snap_radius_px, sim, torch.full_like(sim, -2.0))
            best, arg = sim.max(dim=1)
            snap = best >= config.min_similarity
            xy = torch.where(snap[:, None], features.keypoints[arg], xy)
        # Format 1 weighs by the peak value (as it always did), format 2 by its square (SLD*).
        w = conf if self.head.cfg.version < 2 else conf ** 2
        return Correspondences(xy[keep].cpu().numpy().astype(np.float64),
                               self.points_xyz[keep].cpu().numpy().astype(np.float64),
                               w[keep].cpu().numpy().astype(np.float64))

    def _keypoint_heat(self, features, config, visible=None, top=None):
        """
        Heatmap values of the landmarks at every keypoint's cell.

        Format 2 heads are per-cell classifiers: they run only on the cells that hold keypoints.

        :return: (N, L) values; with ``top``: the ``top`` highest per keypoint, (values (N, top),
            landmark ids (N, top)), ranked per cell before being spread to its keypoints.
            The head runs in ``config.head_precision``.
        """
        hc, wc = features.grid_hw
        kp = features.keypoints
        cx = ((kp[:, 0] + 0.5) / GRID_STRIDE).long().clamp(0, wc - 1)
        cy = ((kp[:, 1] + 0.5) / GRID_STRIDE).long().clamp(0, hc - 1)
        cells, inverse = torch.unique(cy * wc + cx, return_inverse=True)
        desc = features.grid_at(cells).float()
        with self.head_autocast(config):
            heat = self.head.cell_probabilities(desc).float()                   # (C, L)
        if visible is not None:
            heat = heat * visible[None]
        if top is None:
            return heat[inverse]
        heat, cand = _top_per_row(heat, top, config.min_landmark_confidence)
        return heat[inverse], cand[inverse]

    def _verified_keypoints(self, feats, config, visible):
        """Keypoints matched to the landmarks their cell's heatmaps rank first, by descriptor."""
        kp = feats.keypoints
        if kp.shape[0] == 0:
            return Correspondences(np.zeros((0, 2)), np.zeros((0, 3)))
        heat, cand = self._keypoint_heat(feats, config, visible, config.top_landmarks)  # (N, k)
        if heat.shape[1] == 0:     # no landmark reaches min_landmark_confidence anywhere
            return Correspondences(np.zeros((0, 2)), np.zeros((0, 3)))
        # Descriptor similarity only where the heatmap is confident enough (about a third of
        # the candidates): the best of each landmark's stored observations.
        n, j = torch.nonzero(heat >= config.min_landmark_confidence, as_tuple=True)
        sim = torch.full_like(heat, -2.0)
        sim[n, j] = torch.einsum('pd,pkd->pk', feats.keypoint_desc[n],
                                 self.observations[cand[n, j]]).amax(dim=1)
        best, arg = sim.max(dim=1)
        keep = best >= config.min_similarity
        if config.one_keypoint_per_landmark:
            keep &= self._best_per_landmark(cand[torch.arange(len(arg)), arg], best, keep)
        landmark = cand[keep, arg[keep]]
        # No weights: the 2D point is a keypoint, as precise whatever the classifier's
        # probability (which says which landmark, not where).
        return Correspondences(kp[keep].cpu().numpy().astype(np.float64),
                               self.points_xyz[landmark].cpu().numpy().astype(np.float64),
                               scores=best[keep].cpu().numpy().astype(np.float64))

    @staticmethod
    def _best_per_landmark(landmark_N, score_N, keep_N):
        """(N,) mask: of the kept keypoints matched to one landmark, the best scoring one."""
        score = torch.where(keep_N, score_N, torch.full_like(score_N, -3.0))
        top = torch.full((int(landmark_N.max()) + 1,), -3.0, dtype=score.dtype,
                         device=score.device)
        top = top.scatter_reduce(0, landmark_N, score, 'amax')
        first = torch.zeros_like(keep_N)
        winners = torch.nonzero(keep_N & (score == top[landmark_N]))[:, 0]
        # Ties: the first keypoint wins (unique keeps the first index of each landmark).
        _, pos = np.unique(landmark_N[winners].cpu().numpy(), return_index=True)
        first[winners[torch.from_numpy(pos).to(winners.device)]] = True
        return first

    def map_points(self):
        return self.points_xyz.cpu().numpy()


def _top_per_row(heat_CL, top, min_value):
    """
    Return the ``top`` highest values of each row that reach ``min_value``, best first.

    :return: (values (C, K), columns (C, K)), K <= top; places without such a value hold 0
        (and column 0). The same values as ``topk`` where they reach ``min_value``, found by
        thresholding: torch's CPU ``topk`` for k = 16 over 1000 columns took 8 ms at 1600 rows,
        and probabilities that sum to at most 1 have at most 1 / min_value entries above it.
    """
    if min_value <= 0:
        return heat_CL.topk(min(top, heat_CL.shape[1]), dim=1)
    C = heat_CL.shape[0]
    rows, cols = torch.nonzero(heat_CL >= min_value, as_tuple=True)
    vals = heat_CL[rows, cols]
    order = torch.argsort(-vals, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]     # by row, best first in a row
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = torch.bincount(rows, minlength=C)
    rank = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) -
                                                             counts)[rows]
    K = min(top, int(counts.max())) if rows.numel() else 0
    keep = rank < K
    out_v = heat_CL.new_zeros((C, K))
    out_c = torch.zeros((C, K), dtype=torch.int64, device=heat_CL.device)
    out_v[rows[keep], rank[keep]] = vals[keep]
    out_c[rows[keep], rank[keep]] = cols[keep]
    return out_v, out_c


SCENE_MODEL = LandmarkDetectorModel

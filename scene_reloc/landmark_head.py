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
Scene landmark detector (the SLD method): one heatmap per 3D scene landmark, at 1/8 resolution.

The frozen backbone's descriptors on the 1/8 grid go through an ensemble of small convolutional
heads, each responsible for a block of landmarks (as SLD* splits 1000 landmarks over 8 networks
of 125): more capacity per landmark without one wide, slow network. Each channel is a heatmap
(sigmoid) that peaks where its landmark is seen; the peak, refined to sub-cell precision by the
probability-weighted mean of its 3x3 neighbourhood, gives the landmark's 2D position, and the
peak value its confidence. Those are the 2D-3D correspondences for weighted PnP.
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from scene_reloc.backbones import GRID_STRIDE

LANDMARK_FORMATS = (1, 2)
"""Landmark map formats this code reads; new maps are written in the last one."""


@dataclass
class LandmarkHeadConfig:
    """Shape of the landmark detector (stored in the scene map)."""

    version: int = 1
    """Landmark map format: 1 (the first landmark maps: 3x3 convolutional sigmoid heatmaps, one
    descriptor per landmark, float32 head) or 2 (per-cell classifiers, the descriptors of the
    keypoints that re-detected each landmark, float16 head); a missing key reads as 1."""
    in_dim: int = 128
    """Backbone descriptor dimension."""
    hidden: int = 64
    """Channels of each head's hidden layers."""
    num_landmarks: int = 300
    """Landmarks in the scene."""
    landmarks_per_head: int = 150
    """Landmarks one head of the ensemble detects."""

    def to_dict(self):
        return asdict(self)

    @property
    def blocks(self):
        """(start, end) landmark ranges of the heads."""
        n, b = self.num_landmarks, self.landmarks_per_head
        return [(s, min(s + b, n)) for s in range(0, n, b)]


class LandmarkDetector(nn.Module):
    """
    Ensemble of heatmap heads.

    Format 2 (new maps): every head is a per-cell classifier (1x1 convolutions) over its block
    of landmarks plus "no landmark here"; a landmark's heatmap is its softmax probability, so
    the landmarks of a block compete for each cell as a detector's classes do (SuperPoint's
    65-way cell softmax, SRC's region softmax). Format 1: two 3x3 convolutions and one
    sigmoid heatmap per landmark, trained with a focal loss.

    ``forward(grid_BDHW)`` returns the logits (format 2: ``L + heads`` channels, each head's
    background last); :meth:`probabilities` the ``(B, L, H, W)`` heatmaps.
    """

    def __init__(self, cfg: LandmarkHeadConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        if cfg.version >= 2:
            self.heads = nn.ModuleList(nn.Sequential(
                nn.Conv2d(cfg.in_dim, h, 1), nn.ReLU(inplace=True),
                nn.Conv2d(h, h, 1), nn.ReLU(inplace=True),
                nn.Conv2d(h, e - s + 1, 1)) for s, e in cfg.blocks)
            return
        self.heads = nn.ModuleList(nn.Sequential(
            nn.Conv2d(cfg.in_dim, h, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(h, e - s, 1)) for s, e in cfg.blocks)
        for head in self.heads:
            # Start every heatmap near "not here" (sigmoid ~ 0.01), as detectors do.
            nn.init.constant_(head[-1].bias, -4.6)

    def forward(self, grid_BDHW):
        return torch.cat([head(grid_BDHW) for head in self.heads], dim=1)

    def probabilities(self, grid_BDHW):
        """Heatmaps in [0, 1], (B, L, H, W)."""
        if self.cfg.version < 2:
            return torch.sigmoid(self.forward(grid_BDHW))
        return torch.cat([torch.softmax(head(grid_BDHW), dim=1)[:, :-1]
                          for head in self.heads], dim=1)

    def cell_probabilities(self, desc_ND):
        """
        Format 2: every landmark's probability at cells with descriptors ``desc_ND``, (N, L).

        The same numbers as :meth:`probabilities` on those cells, as matrix products.
        """
        return torch.cat([torch.softmax(_cell_logits(head, desc_ND), dim=1)[:, :-1]
                          for head in self.heads], dim=1)

    def cell_loss(self, desc_BD, label_B):
        """
        Return the format 2 training loss, summed over the heads.

        Cross-entropy of every head on cells ``desc_BD`` whose landmark is ``label_B``
        (``num_landmarks`` for none).
        """
        loss = 0.0
        for head, (s, e) in zip(self.heads, self.cfg.blocks):
            target = torch.where((label_B >= s) & (label_B < e), label_B - s,
                                 torch.full_like(label_B, e - s))
            loss = loss + F.cross_entropy(_cell_logits(head, desc_BD), target)
        return loss

    @torch.inference_mode()
    def detect(self, grid_HWD):
        """
        Peak of every landmark's heatmap.

        :param grid_HWD: (Hc, Wc, D) backbone descriptors on the 1/8 grid.
        :return: (xy_L2 pixel positions, confidence_L in [0, 1]).
        """
        x = grid_HWD.permute(2, 0, 1)[None].float()
        return heatmap_peaks(self.probabilities(x)[0])


def _cell_logits(head, desc_ND):
    """Run a format 2 head (1x1 convolutions) on cell descriptors as matrix products: (N, C)."""
    x = desc_ND
    for layer in head:
        x = F.linear(x, layer.weight[:, :, 0, 0], layer.bias) if isinstance(layer, nn.Conv2d) \
            else layer(x)
    return x


def heatmap_peaks(prob_LHW):
    """
    Sub-cell peak positions (pixels) and peak values of heatmaps on the 1/8 grid.

    The peak cell is refined by the probability-weighted mean over its 3x3 neighbourhood.
    """
    L, H, W = prob_LHW.shape
    flat = prob_LHW.reshape(L, -1)
    conf, idx = flat.max(dim=1)
    cy, cx = (idx // W).float(), (idx % W).float()
    # 3x3 neighbourhood of every peak via unfold on a padded map.
    pad = F.pad(prob_LHW[:, None], (1, 1, 1, 1))
    patches = F.unfold(pad, 3)                                        # (L, 9, H*W)
    nb = torch.gather(patches, 2, idx[:, None, None].expand(L, 9, 1))[:, :, 0]   # (L, 9)
    off = torch.tensor([-1.0, 0.0, 1.0], device=prob_LHW.device)
    oy, ox = torch.meshgrid(off, off, indexing='ij')
    w = nb / nb.sum(1, keepdim=True).clamp(min=1e-12)
    dx, dy = (w * ox.reshape(1, 9)).sum(1), (w * oy.reshape(1, 9)).sum(1)
    # Cell (i, j) is centred at pixel ((j + 0.5) * stride - 0.5), as grid_centres.
    x = (cx + dx + 0.5) * GRID_STRIDE - 0.5
    y = (cy + dy + 0.5) * GRID_STRIDE - 0.5
    return torch.stack([x, y], dim=1), conf


def heatmap_targets(xy_BL2, visible_BL, height, width, sigma=1.0):
    """
    Gaussian targets on the 1/8 grid, exactly 1 at the cell nearest each visible landmark.

    :param xy_BL2: pixel positions; :param visible_BL: bool mask.
    :return: (B, L, H, W) float in [0, 1]; all zero for landmarks that are not visible.
    """
    g = (xy_BL2 + 0.5) / GRID_STRIDE - 0.5                            # grid coordinates
    ys = torch.arange(height, dtype=torch.float32, device=g.device)
    xs = torch.arange(width, dtype=torch.float32, device=g.device)
    d2 = (xs.view(1, 1, 1, -1) - g[..., 0, None, None]) ** 2 + \
        (ys.view(1, 1, -1, 1) - g[..., 1, None, None]) ** 2
    t = torch.exp(-d2 / (2 * sigma ** 2))
    peak = t.flatten(2).argmax(2)
    t = t.flatten(2)
    t.scatter_(2, peak[..., None], 1.0)
    t = t.view_as(d2) * visible_BL[..., None, None].float()
    return t


def mse_heatmap_loss(logits, target):
    """Return the SLD release's loss: squared error between heatmap and Gaussian target."""
    return F.mse_loss(torch.sigmoid(logits), target, reduction='sum') / \
        target.eq(1.0).float().sum().clamp(min=1.0)


def focal_heatmap_loss(logits, target, alpha=2.0, beta=4.0):
    """
    CenterNet's penalty-reduced focal loss, normalised by the number of visible landmarks.

    Handles the imbalance of one positive cell among thousands per heatmap.
    """
    p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    pos = target.eq(1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p ** alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)

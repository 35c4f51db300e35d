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
Scene region classifier: level-1 region and level-2 sub-region conditioned on level 1 (SRC).

Works per feature-grid cell on the frozen backbone's descriptors. The level-2 branch sees the
trunk features plus an embedding of the level-1 region: during training the true region (teacher
forcing, as SRC), at test time each of the most likely regions in turn. Because the embedding
enters a linear layer, it is a per-region bias added to a shared projection, so scoring several
regions costs one small matrix product each.
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F


@dataclass
class RegionHeadConfig:
    """Shape of the region classifier (stored in the scene map)."""

    in_dim: int = 128
    """Backbone descriptor dimension."""
    hidden: int = 512
    """Width of the trunk and of the level-2 branch."""
    k1: int = 64
    """Level-1 regions."""
    k2: int = 64
    """Level-2 sub-regions per region."""

    def to_dict(self):
        return asdict(self)


class RegionClassifier(nn.Module):
    """
    Per-cell two-level classifier.

    ``forward(feats_ND, l1_N)`` returns ``(logits1_NK1, logits2_NK2)``, the level-2 logits
    conditioned on ``l1_N`` (the true region while training).
    """

    def __init__(self, cfg: RegionHeadConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.trunk = nn.Sequential(nn.Linear(cfg.in_dim, h), nn.ReLU(inplace=True),
                                   nn.Linear(h, h), nn.ReLU(inplace=True))
        self.cls1 = nn.Linear(h, cfg.k1)
        self.proj2 = nn.Linear(h, h)
        self.region_embed = nn.Embedding(cfg.k1, h)
        self.cls2 = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(h, h), nn.ReLU(inplace=True),
                                  nn.Linear(h, cfg.k2))

    def forward(self, feats_ND, l1_N):
        z = self.trunk(feats_ND)
        return self.cls1(z), self.cls2(self.proj2(z) + self.region_embed(l1_N))

    @torch.inference_mode()
    def top_leaves(self, feats_ND, top_regions=2, top_leaves=4, allowed=None):
        """
        Most likely leaves per cell with their joint probabilities p(l1) p(l2 | l1).

        :param allowed: optional (k1 * k2,) bool: only these leaves are candidates (the
            probabilities are renormalised over them: "the camera sees this part of the map").
        :return: (leaf_NT int64 leaf ids l1 * k2 + l2, prob_NT), T = top_leaves, best first.
        """
        z = self.trunk(feats_ND)
        p1 = F.softmax(self.cls1(z), dim=-1)
        if allowed is not None:
            allowed = allowed.reshape(self.cfg.k1, self.cfg.k2)
            p1 = p1 * allowed.any(1)
            p1 = p1 / p1.sum(-1, keepdim=True).clamp(min=1e-12)
        p1_top, l1_top = torch.topk(p1, min(top_regions, self.cfg.k1), dim=-1)
        base = self.proj2(z)
        cand_leaf, cand_prob = [], []
        for j in range(l1_top.shape[1]):
            p2 = F.softmax(self.cls2(base + self.region_embed(l1_top[:, j])), dim=-1)
            if allowed is not None:
                p2 = p2 * allowed[l1_top[:, j]]
                p2 = p2 / p2.sum(-1, keepdim=True).clamp(min=1e-12)
            p2_top, l2_top = torch.topk(p2, min(top_leaves, self.cfg.k2), dim=-1)
            cand_leaf.append(l1_top[:, j:j + 1] * self.cfg.k2 + l2_top)
            cand_prob.append(p1_top[:, j:j + 1] * p2_top)
        leaf = torch.cat(cand_leaf, dim=1)
        prob = torch.cat(cand_prob, dim=1)
        prob, order = torch.topk(prob, min(top_leaves, prob.shape[1]), dim=1)
        return torch.gather(leaf, 1, order), prob

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
Keeping what the starting backbone is good at while pretraining moves it.

The scene heads' losses train the 1/8-grid descriptors only: nothing holds the keypoint score
map (the detector) or the full-resolution descriptors at the keypoints (what the region
classifier's in-leaf matching and the landmark detector's verification compare). A frozen copy
of the starting weights is the teacher of both:

- **detector loss**: binary cross-entropy of the student's score map against the teacher's
  scores over the whole (padded) image;
- **descriptor loss**: 1 - cosine between the student's and the teacher's descriptors at the
  teacher's ``points`` strongest keypoints (3 x 3 local maxima) of each image.

Both are per-image means, so they split exactly over torchrun ranks like the heads' losses.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EARLY_LAYERS = ('block1', 'block2', 'conv1', 'conv2')
"""ALIKE's full- and half-resolution layers: the generic edges and corners."""


@dataclass
class Preserve:
    """Weights of the detector / descriptor losses and the early layers' learning-rate scale."""

    detector_weight: float = 0.0
    descriptor_weight: float = 0.0
    early_lr_scale: float = 1.0
    """learning rate of the early layers (:data:`EARLY_LAYERS`) / the backbone's"""

    @property
    def teaches(self):
        return self.detector_weight > 0 or self.descriptor_weight > 0


def frozen_copy(net):
    """Return the teacher: a frozen copy of ``net`` in eval mode."""
    teacher = copy.deepcopy(net).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def param_groups(net, lr, early_scale):
    """
    Split the backbone's parameters: the early layers at ``lr * early_scale``, the rest at ``lr``.

    :return: list of optimiser groups (``lr`` set); one group when ``early_scale`` is 1.
    """
    if early_scale == 1.0:
        return [{'params': list(net.parameters()), 'lr': lr}]
    early, late = [], []
    for name, p in net.named_parameters():
        (early if name.split('.')[0] in EARLY_LAYERS else late).append(p)
    return [{'params': early, 'lr': lr * early_scale}, {'params': late, 'lr': lr}]


def top_points(scores_B1HW, k, radius=1):
    """(B, k, 2) pixel (x, y) of the ``k`` strongest local maxima of each score map."""
    peak = F.max_pool2d(scores_B1HW, 2 * radius + 1, stride=1, padding=radius)
    s = torch.where(scores_B1HW == peak, scores_B1HW, torch.zeros_like(scores_B1HW))
    B, _, H, W = s.shape
    idx = s.flatten(1).topk(min(k, H * W), dim=1).indices
    return torch.stack([idx % W, idx // W], dim=-1).float()


def preservation_losses(net, teacher, levels, padded, x_B3HW, points=256, with_points=False):
    """
    Per-image detector and descriptor losses of the student against the teacher.

    :param levels: the student's level maps for the padded ``x_B3HW`` (with gradients).
    :param padded: (Hp, Wp).
    :param with_points: also return the teacher's keypoints (B, points, 2).
    :return: (detector (B,), descriptor (B,)[, keypoints]).
    """
    with torch.no_grad():
        t_levels, _, _ = teacher(x_B3HW)
        t_score = teacher.padded_score_map(t_levels, padded)
        pts = top_points(t_score, points)
        t_desc = teacher.sample(t_levels, padded, pts)
    s_score = net.padded_score_map(levels, padded).clamp(1e-6, 1 - 1e-6)
    detector = F.binary_cross_entropy(s_score, t_score, reduction='none').flatten(1).mean(1)
    s_desc = net.sample(levels, padded, pts)
    descriptor = (1 - (s_desc * t_desc).sum(-1)).mean(1)
    return (detector, descriptor, pts) if with_points else (detector, descriptor)

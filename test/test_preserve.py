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

"""Pretraining keeps the starting backbone's detector and keypoint descriptors when asked."""

from ddp_worker import toy_scenes
import torch

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc_training.learn.preserve import (
    frozen_copy,
    param_groups,
    preservation_losses,
    Preserve,
    top_points,
)
from scene_reloc_training.learn.pretrain_backbone import train_whole_network


def _net(seed=0):
    torch.manual_seed(seed)
    return AlikeNet(*ALIKE_CONFIGS['alike-t']).eval()


def _losses(net, teacher, x):
    levels, _, padded = net(x)
    return preservation_losses(net, teacher, levels, padded, x, points=32)


def test_top_points_are_the_strongest_local_maxima():
    s = torch.zeros(1, 1, 8, 10)
    s[0, 0, 2, 3], s[0, 0, 2, 4], s[0, 0, 6, 7] = 0.9, 0.5, 0.7   # (2, 4) is no maximum
    pts = top_points(s, 2)
    assert pts[0].tolist() == [[3.0, 2.0], [7.0, 6.0]]


def test_losses_vanish_at_the_teacher_and_grow_when_the_student_moves():
    net = _net()
    teacher = frozen_copy(net)
    x = torch.rand(2, 3, 64, 96)
    det0, desc0 = _losses(net, teacher, x)
    assert desc0.shape == (2,) and det0.shape == (2,)
    assert desc0.abs().max() < 1e-5                     # the same descriptors
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    det1, desc1 = _losses(net, teacher, x)
    assert (desc1 > 1e-3).all()
    assert (det1 > det0).all()        # BCE to soft targets is smallest at the targets
    assert not any(p.requires_grad for p in teacher.parameters())


def test_training_with_the_losses_stays_nearer_the_start():
    def drift(preserve):
        net = _net()
        start = frozen_copy(net)
        net, _, _ = train_whole_network(net, toy_scenes(net.dim, heads=('region',))[1:], 30,
                                        batch_size=2, lr_backbone=3e-3, progress=False,
                                        every=10, preserve=preserve)
        x = torch.rand(2, 3, 64, 96)
        return [float(v.mean()) for v in _losses(net, start, x)]
    free = drift(Preserve())
    kept = drift(Preserve(detector_weight=1.0, descriptor_weight=1.0))
    assert kept[0] < free[0] and kept[1] < free[1], (free, kept)


def test_early_layers_get_their_own_learning_rate():
    net = _net()
    groups = param_groups(net, 1e-4, 0.1)
    early = {id(p) for p in groups[0]['params']}
    assert groups[0]['lr'] == 1e-5 and groups[1]['lr'] == 1e-4
    assert id(net.block1.conv1.weight) in early and id(net.block4.conv1.weight) not in early
    assert len(groups[0]['params']) + len(groups[1]['params']) == len(list(net.parameters()))
    assert len(param_groups(net, 1e-4, 1.0)) == 1

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
Whole-network training of the landmark detector, over one scene or many.

The faster-training recipe of SLD: fine-tune one backbone shared by all scenes, with one
landmark head per scene, on scene-homogeneous batches whose scene order is shuffled; afterwards a
new scene trains only its head on a buffer of frozen features (``memorize --head
landmark_detector --backbone-weights finetuned.pth``). With one scene this is plain end-to-end
training, the baseline that head-only training is measured against.

BatchNorm statistics stay frozen (batches of a few images would ruin them); every weight trains.
"""

from dataclasses import dataclass
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from scene_reloc.backbones import grid_centres
from scene_reloc.landmark_head import focal_heatmap_loss, heatmap_targets, LandmarkDetector
from scene_reloc_training.augment import augment_with_landmarks


@dataclass
class SceneData:
    """One scene's training material: images and where its landmarks are in them."""

    images: list            # (H, W, 3) uint8
    xy: np.ndarray          # (F, L, 2) landmark pixels
    visible: np.ndarray     # (F, L) bool
    head_cfg: object        # LandmarkHeadConfig


def grid_features(net, x_B3HW):
    """Backbone descriptors at the 1/8 grid, with gradients: (B, D, Hc, Wc)."""
    levels, (H, W), padded = net(x_B3HW)
    g = grid_centres(H, W).to(x_B3HW.device)
    hc, wc = g.shape[:2]
    pts = g.reshape(1, -1, 2).expand(x_B3HW.shape[0], -1, -1)
    d = net.sample(levels, padded, pts)
    return d.reshape(-1, hc, wc, d.shape[-1]).permute(0, 3, 1, 2)


def augmented_samples(scene, idx, rngs, device, margin=4):
    """Images ``idx`` of a scene augmented (one generator each), landmarks moved alike."""
    imgs, xys, vis = [], [], []
    for i, rng in zip(idx, rngs):
        img, xy, v = augment_with_landmarks(rng, scene.images[i], scene.xy[i], scene.visible[i],
                                            margin)
        imgs.append(img)
        xys.append(xy)
        vis.append(v)
    x = torch.from_numpy(np.stack(imgs)).to(device).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.from_numpy(np.stack(xys)).float(), torch.from_numpy(np.stack(vis))


class _Network(nn.Module):
    """Backbone + one head per scene, so that DDP wraps one module."""

    def __init__(self, net, heads):
        super().__init__()
        self.net, self.heads = net, heads

    def forward(self, x, scene):
        return self.heads[scene](grid_features(self.net, x))


def per_image_focal_loss(logits, target):
    """Focal heatmap loss normalised per image, then averaged: it splits exactly over ranks."""
    return torch.stack([focal_heatmap_loss(logits[i:i + 1], target[i:i + 1])
                        for i in range(logits.shape[0])]).mean()


def sample_plan(seed, iteration, scenes, global_batch):
    """Scene, image indices and per-sample augmentation seeds of one global batch."""
    rng = np.random.default_rng([seed, iteration])
    s = int(rng.integers(len(scenes)))
    idx = rng.integers(len(scenes[s].images), size=global_batch)
    return s, idx, rng.integers(2 ** 31, size=global_batch)


def train_whole_network(net, scenes, iterations, batch_size=2, lr_backbone=1e-4, lr_head=2e-3,
                        seed=0, device='cpu', progress=True, callback=None, every=100):
    """
    Train ``net`` (a backbone module) and one :class:`LandmarkDetector` per scene.

    Each batch holds images of one scene (its head sees only its own landmarks); the scene of
    each batch is drawn at random, so scenes are shuffled across the run.

    Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
    DistributedDataParallel and ``batch_size`` is the global batch, split evenly over the
    ranks. Every sample's image and augmentation depend only on (seed, iteration, its index in
    the global batch) and the loss is a per-image mean, so N processes compute what one process
    computes on the whole global batch.

    :param callback: called as ``callback(it, seconds_of_training, net, heads)`` every
        ``every`` iterations (evaluation time is not counted in the seconds).
    :return: (net, heads, history list of (iteration, seconds, loss)).
    """
    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if batch_size % world:
        raise ValueError(f'the global batch ({batch_size}) must split evenly over {world} '
                         'processes')
    local = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
    torch.manual_seed(seed)
    heads = nn.ModuleList(LandmarkDetector(s.head_cfg) for s in scenes)
    net.eval()   # frozen BatchNorm statistics
    for p in net.parameters():
        p.requires_grad_(True)
    model = _Network(net, heads).to(device)
    wrapped = model
    if distributed:
        wrapped = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    opt = torch.optim.AdamW([{'params': net.parameters(), 'lr': lr_backbone},
                             {'params': heads.parameters(), 'lr': lr_head}], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr_backbone, lr_head],
                                                total_steps=iterations, pct_start=0.1)
    history, seconds, loss_avg = [], 0.0, float('nan')
    for it in tqdm(range(iterations), desc='training backbone + heads', unit='it',
                   disable=not progress or rank != 0):
        t0 = time.perf_counter()
        s, idx, aug = sample_plan(seed, it, scenes, batch_size)
        x, xy, vis = augmented_samples(scenes[s], idx[local],
                                       [np.random.default_rng(a) for a in aug[local]], device)
        logits = wrapped(x, s)
        target = heatmap_targets(xy, vis, logits.shape[2], logits.shape[3]).to(device)
        loss = per_image_focal_loss(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for j, head in enumerate(heads):
            if j != s:   # untouched heads stay untouched (no decay, no moments), as with 1 rank
                for p in head.parameters():
                    p.grad = None
        opt.step()
        sched.step()
        seconds += time.perf_counter() - t0
        v = float(loss.detach())
        loss_avg = v if np.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * v
        if (it + 1) % every == 0 or it + 1 == iterations:
            history.append((it + 1, round(seconds, 2), round(loss_avg, 4)))
            if callback is not None:
                heads.eval()
                with torch.no_grad():
                    callback(it + 1, seconds, net, heads)
                heads.train()
    for p in net.parameters():
        p.requires_grad_(False)
    heads.eval()
    return net, heads, history

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
Backbone pretraining: one backbone shared by many scenes, a region and/or landmark head each.

Scene-homogeneous batches with the scene drawn at random (so scenes are shuffled across the
run): each head sees only its own scene's labels, while the backbone learns from all of them.
Afterwards a new scene trains only a head on the frozen backbone (``memorize --backbone-weights
backbone.pth``). With one scene this is plain end-to-end training, the baseline that head-only
training is measured against.

BatchNorm statistics stay frozen (batches of a few images would ruin them); every weight trains.
Runs under torchrun (DistributedDataParallel); checkpoints hold everything to resume exactly.
"""

from dataclasses import dataclass
import os
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from tqdm import tqdm

from scene_reloc.backbones import grid_centres, grid_descriptors, sample_grid
from scene_reloc.landmark_head import focal_heatmap_loss, heatmap_targets, LandmarkDetector
from scene_reloc.region_head import RegionClassifier
from scene_reloc_training.learn.matching import matching_losses
from scene_reloc_training.learn.preserve import (
    frozen_copy,
    param_groups,
    preservation_losses,
    Preserve,
    top_points,
)
from scene_reloc_training.memorize.augment import augment_sample
from scene_reloc_training.memorize.feature_buffer import sample_coords

CHECKPOINT_FORMAT = 1


@dataclass
class SceneData:
    """One scene's training material; a head is trained for each kind of label it has."""

    images: list                   # (H, W, 3) uint8
    xy: np.ndarray = None          # (F, L, 2) landmark pixels
    visible: np.ndarray = None     # (F, L) bool
    head_cfg: object = None        # LandmarkHeadConfig, with xy / visible
    coords: list = None            # (H, W, 3) float32 scene coordinates, NaN unknown
    partition: object = None       # HierarchicalPartition of the coordinates
    region_cfg: object = None      # RegionHeadConfig, with coords / partition
    partners: list = None          # per frame: frames overlapping it (the matching loss)
    lifted: list = None            # per frame: coordinates from depth (matching needs them)


def grid_features(net, x_B3HW):
    """Backbone descriptors at the 1/8 grid, with gradients: (B, D, Hc, Wc)."""
    return grid_descriptors(net, x_B3HW).permute(0, 3, 1, 2)


def augmented_samples(scene, idx, rngs, device, margin=4):
    """
    Images ``idx`` of a scene augmented (one generator each), their labels moved alike.

    :return: dict with ``x`` (B, 3, H, W); ``xy``, ``visible`` when the scene has landmarks;
        ``leaf``, ``l1`` (B, Hc * Wc) int64, -1 where unknown, when it has a partition;
        ``xyz`` (list of (H, W, 3) scene coordinates of the views, None where not lifted from
        depth) when it has partners.
    """
    imgs, xys, vis, leaves, l1s, xyzs = [], [], [], [], [], []
    for i, rng in zip(idx, rngs):
        has_lm = scene.xy is not None
        img, xyz, xy, v = augment_sample(
            rng, scene.images[i], scene.coords[i] if scene.coords is not None else None,
            scene.xy[i] if has_lm else None, scene.visible[i] if has_lm else None, margin)
        imgs.append(img)
        xyzs.append(xyz if scene.lifted is None or scene.lifted[i] else None)
        if has_lm:
            xys.append(xy)
            vis.append(v)
        if scene.partition is not None:
            H, W = img.shape[:2]
            leaf, l1 = scene.partition.assign(
                sample_coords(xyz, grid_centres(H, W).numpy().reshape(-1, 2)))
            leaves.append(leaf)
            l1s.append(l1)
    out = {'x': torch.from_numpy(np.stack(imgs)).to(device).permute(0, 3, 1, 2).float() / 255.0}
    if xys:
        out['xy'] = torch.from_numpy(np.stack(xys)).float()
        out['visible'] = torch.from_numpy(np.stack(vis))
    if leaves:
        out['leaf'] = torch.from_numpy(np.stack(leaves)).long().to(device)
        out['l1'] = torch.from_numpy(np.stack(l1s)).long().to(device)
    if scene.partners is not None:
        out['xyz'] = xyzs
    return out


def make_heads(scene):
    """Build the heads one scene trains: ``landmark`` and / or ``region``."""
    heads = nn.ModuleDict()
    if scene.head_cfg is not None:
        heads['landmark'] = LandmarkDetector(scene.head_cfg)
    if scene.region_cfg is not None:
        heads['region'] = RegionClassifier(scene.region_cfg)
    if not heads:
        raise ValueError('a scene needs landmarks or a partition to train a head on')
    return heads


class _Network(nn.Module):
    """Backbone + the heads of every scene, so that DDP wraps one module."""

    def __init__(self, net, heads):
        super().__init__()
        self.net, self.heads = net, heads

    def forward(self, x, scene, l1_BN=None, teacher=None, xyz=None):
        levels, size, padded = self.net(x)
        g = sample_grid(self.net, levels, size, padded, x.shape[0]).permute(0, 3, 1, 2)
        heads = self.heads[scene]
        out = {}
        pts = None
        if teacher is not None:
            detector, descriptor, pts = preservation_losses(self.net, teacher, levels, padded, x,
                                                            with_points=True)
            out['preserve'] = detector, descriptor
        if xyz is not None:   # consecutive images are views of overlapping frames
            if pts is None:
                with torch.no_grad():
                    pts = top_points(self.net.padded_score_map(levels, padded), 256)
            pairs = [(i, i + 1) for i in range(0, x.shape[0] - 1, 2)]
            out['match'] = matching_losses(self.net, levels, padded, pts, xyz, pairs)
        if 'landmark' in heads:
            out['landmark'] = heads['landmark'](g)
        if 'region' in heads:   # level 2 conditioned on the true region (teacher forcing)
            f = g.flatten(2).transpose(1, 2)
            out['region'] = heads['region'](f.reshape(-1, f.shape[-1]),
                                            l1_BN.clamp(min=0).reshape(-1))
        return out


def per_image_focal_loss(logits, target):
    """Focal heatmap loss normalised per image: (B,). Averaged, it splits exactly over ranks."""
    return torch.stack([focal_heatmap_loss(logits[i:i + 1], target[i:i + 1])
                        for i in range(logits.shape[0])])


def per_image_region_loss(logit1, logit2, leaf_BN, l1_BN, k2):
    """Level-1 + level-2 cross-entropy averaged over each image's labelled cells: (B,)."""
    ok = leaf_BN >= 0
    ce = F.cross_entropy(logit1, l1_BN.clamp(min=0).reshape(-1), reduction='none') + \
        F.cross_entropy(logit2, (leaf_BN.clamp(min=0) % k2).reshape(-1), reduction='none')
    ce = ce.reshape(ok.shape) * ok
    return ce.sum(1) / ok.sum(1).clamp(min=1)


def sample_plan(seed, iteration, scenes, global_batch, pairs=False):
    """
    Scene, image indices and per-sample augmentation seeds of one global batch.

    With ``pairs`` every odd sample is a frame overlapping the sample before it (drawn from the
    scene's ``partners``), for the matching loss.
    """
    rng = np.random.default_rng([seed, iteration])
    s = int(rng.integers(len(scenes)))
    if not pairs:
        idx = rng.integers(len(scenes[s].images), size=global_batch)
        return s, idx, rng.integers(2 ** 31, size=global_batch)
    anchors = rng.integers(len(scenes[s].images), size=global_batch // 2)
    idx = np.stack([anchors, [rng.choice(scenes[s].partners[i]) for i in anchors]], 1)
    return s, idx.reshape(-1), rng.integers(2 ** 31, size=global_batch)


def batch_loss(wrapped, scene, s, batch, device, teacher=None, preserve=Preserve(),
               matching_weight=0.0, parts=None):
    """
    Mean over the batch's images of the sum of the scene's head (and other) losses.

    :param parts: a dict that receives the unweighted matching loss (``match``), when it runs.
    """
    out = wrapped(batch['x'], s, batch.get('l1'), teacher,
                  batch.get('xyz') if matching_weight else None)
    loss = 0.0
    if 'match' in out:
        loss = loss + matching_weight * out['match']
        if parts is not None:
            parts['match'] = float(out['match'].detach().mean())
    if 'preserve' in out:
        detector, descriptor = out['preserve']
        loss = loss + preserve.detector_weight * detector + \
            preserve.descriptor_weight * descriptor
    if 'landmark' in out:
        logits = out['landmark']
        target = heatmap_targets(batch['xy'], batch['visible'], logits.shape[2],
                                 logits.shape[3]).to(device)
        loss = loss + per_image_focal_loss(logits, target)
    if 'region' in out:
        loss = loss + per_image_region_loss(*out['region'], batch['leaf'], batch['l1'],
                                            scene.region_cfg.k2)
    return loss.mean()


def train_whole_network(net, scenes, iterations, batch_size=2, lr_backbone=1e-4, lr_head=2e-3,
                        seed=0, device='cpu', progress=True, callback=None, every=100,
                        checkpoint=None, resume=False, run_info=None, after_log=None,
                        preserve=Preserve(), matching_weight=0.0):
    """
    Train ``net`` (a backbone module) and one set of heads per scene (:func:`make_heads`).

    Each batch holds images of one scene; the scene of each batch is drawn at random. Under
    ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
    DistributedDataParallel and ``batch_size`` is the global batch, split evenly over the
    ranks. Every sample's image and augmentation depend only on (seed, iteration, its index in
    the global batch) and the loss is a per-image mean, so N processes compute what one process
    computes on the whole global batch, and a resumed run what an uninterrupted one computes.

    :param callback: ``callback(it, seconds_of_training, net, heads)`` every ``every``
        iterations on rank 0; a dict it returns joins that row of the history (validation).
    :param checkpoint: file written (rank 0) every ``every`` iterations: weights, optimiser,
        schedule, iteration, history and ``run_info`` (the run's configuration); loaded with
        ``weights_only=True``. With ``resume`` the run continues from it.
    :param after_log: ``after_log(history)`` on rank 0 after each new row (live CSV logs).
    :param preserve: :class:`Preserve`: detector / descriptor losses against a frozen copy of
        the starting ``net``, and a lower learning rate for its early layers.
    :param matching_weight: weight of the cross-view keypoint matching loss
        (:mod:`~scene_reloc_training.learn.matching`); the scenes need ``partners``, and each
        process's share of the batch must be pairs (even).
    :return: (net, heads, history: list of dicts with iteration, seconds, loss, ...).
    """
    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if batch_size % world:
        raise ValueError(f'the global batch ({batch_size}) must split evenly over {world} '
                         'processes')
    local = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
    if matching_weight and (batch_size // world) % 2:
        raise ValueError(f'the matching loss needs pairs: each of the {world} processes needs an '
                         f'even share of the global batch ({batch_size})')
    if matching_weight and any(sc.partners is None for sc in scenes):
        raise ValueError("the matching loss needs each scene's overlapping frames (partners)")
    torch.manual_seed(seed)
    heads = nn.ModuleList(make_heads(s) for s in scenes)
    net.eval()   # frozen BatchNorm statistics
    for p in net.parameters():
        p.requires_grad_(True)
    model = _Network(net, heads).to(device)
    teacher = frozen_copy(net) if preserve.teaches else None
    groups = param_groups(net, lr_backbone, preserve.early_lr_scale) + \
        [{'params': heads.parameters(), 'lr': lr_head}]
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g['lr'] for g in groups],
                                                total_steps=iterations, pct_start=0.1)
    start, seconds, history = 0, 0.0, []
    if resume and checkpoint and os.path.exists(checkpoint):
        start, seconds, history = load_checkpoint(checkpoint, model, opt, sched, run_info)
    wrapped = model
    if distributed:
        wrapped = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss_avg = history[-1]['loss'] if history else float('nan')
    match_avg = history[-1].get('match_loss', float('nan')) if history else float('nan')
    bar = tqdm(range(start, iterations), desc='pretraining backbone + heads', unit='it',
               initial=start, total=iterations, disable=not progress or rank != 0)
    for it in bar:
        t0 = time.perf_counter()
        s, idx, aug = sample_plan(seed, it, scenes, batch_size, pairs=matching_weight > 0)
        batch = augmented_samples(scenes[s], idx[local],
                                  [np.random.default_rng(a) for a in aug[local]], device)
        parts = {}
        loss = batch_loss(wrapped, scenes[s], s, batch, device, teacher, preserve,
                          matching_weight, parts)
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
        if 'match' in parts:   # this process's pairs (rank 0's on the log)
            m = parts['match']
            match_avg = m if np.isnan(match_avg) else 0.95 * match_avg + 0.05 * m
        if (it + 1) % every == 0 or it + 1 == iterations:
            row = {'iteration': it + 1, 'seconds': round(seconds, 2),
                   # groups: [early backbone layers,] backbone, heads
                   'loss': round(loss_avg, 4), 'lr_backbone': sched.get_last_lr()[-2]}
            if matching_weight:   # the matching loss alone, unweighted (smoothed)
                row['match_loss'] = round(match_avg, 4)
            if callback is not None and rank == 0:
                heads.eval()
                row.update(callback(it + 1, seconds, net, heads) or {})
                heads.train()
            history.append(row)
            bar.set_postfix(loss=f'{loss_avg:.3f}')
            if after_log is not None and rank == 0:
                after_log(history)
            if checkpoint and rank == 0:
                save_checkpoint(checkpoint, model, opt, sched, it + 1, seconds, history,
                                run_info)
            if distributed:
                dist.barrier()
    for p in net.parameters():
        p.requires_grad_(False)
    heads.eval()
    return net, heads, history


def save_checkpoint(path, model, opt, sched, iteration, seconds, history, run_info):
    """Write atomically: an interrupted write never replaces a good checkpoint."""
    state = {'format': CHECKPOINT_FORMAT, 'run_info': run_info or {}, 'iteration': iteration,
             'seconds': seconds, 'history': history, 'model': model.state_dict(),
             'optimizer': opt.state_dict(), 'scheduler': sched.state_dict()}
    tmp = path + '.tmp'
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, opt, sched, run_info):
    """
    Restore a checkpoint into the model, optimiser and schedule.

    :raises ValueError: the checkpoint was written by a run with another configuration.
    :return: (iteration, seconds, history).
    """
    state = torch.load(path, map_location='cpu', weights_only=True)
    if state.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path}: checkpoint format {state.get("format")}, expected '
                         f'{CHECKPOINT_FORMAT}')
    saved = state.get('run_info', {})
    diff = sorted(k for k in set(saved) | set(run_info or {})
                  if saved.get(k) != (run_info or {}).get(k))
    if diff:
        raise ValueError(f'{path} was written by a run with other settings ({", ".join(diff)}); '
                         'resume with the same settings, or remove the checkpoint to start over')
    model.load_state_dict(state['model'])
    opt.load_state_dict(state['optimizer'])
    sched.load_state_dict(state['scheduler'])
    return int(state['iteration']), float(state['seconds']), list(state['history'])

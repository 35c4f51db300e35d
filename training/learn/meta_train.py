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
Meta-learned start of the region classifier (Reptile or first-order MAML), as SRC does.

Each episode is one training scene memorized the way ``memorize`` would (partition, frozen
feature buffer), trained from the current start ``theta`` for a few Adam steps to ``phi``.
Reptile (Nichol et al. 2018, the default) moves ``theta`` toward the episodes' ``phi`` with a
linearly decaying step size; first-order MAML (``method='fomaml'``) steps ``theta`` with Adam
along the gradient of the loss on the scene's *query* views taken at ``phi``. Region labels are
arbitrary per scene, so what carries over is the trunk (and, with ``layers='trunk+level2'``,
the level-2 branch's hidden layers; see :data:`LAYER_SETS`); the label layers start at zero
and the rest at the seeded random start (or at a given ``start``), in every episode and in the
result.

Under ``torchrun`` the episodes of one outer step are split over the ranks and their updates
(``phi - theta``, or the query gradients) summed with all_reduce, so N processes compute what
one process computes with the same meta-batch. Every episode's scene and batches depend only
on (seed, outer step, slot).
"""

from dataclasses import dataclass
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from scene_reloc.partition import HierarchicalPartition
from scene_reloc.region_head import RegionClassifier
from scene_reloc_training.memorize.feature_buffer import build_buffer
from scene_reloc_training.memorize.region_training import region_cross_entropy, region_loss

CHECKPOINT_FORMAT = 1
# What Reptile learns (MetaConfig.layers): the trunk, the feature transform every scene's labels
# are read from, and optionally the level-2 branch's hidden layers too. Layers whose rows are one
# scene's arbitrary labels start at zero, the "zero trick" of Kao et al. 2022: the level-1
# classifier always, the leaf classifier when the level-2 branch is meta-learned; the region
# embedding (one row per arbitrary region) keeps its seeded random start. Measured on held-out
# synthetic scenes with ALIKE-n and 30-step episodes: moving every layer, label layers included,
# killed the level-2 ReLUs (leaf accuracy 1.7 % after 2000 memorize steps, random start 59 %),
# and meta-learning the whole level-2 branch slowed its later learning (16 % against 59 %).
# 'trunk+level2' with 100-step episodes: worse than 'trunk' on the held-out real scenes (README,
# "Three other ways to meta-learn the start"), so 'trunk' stays the default.
LAYER_SETS = {
    'trunk': (('trunk.',), ('cls1.',)),
    'trunk+level2': (('trunk.', 'proj2.', 'cls2.1.'), ('cls1.', 'cls2.3.')),
}


def layer_sets(layers):
    """(meta-learned, zeroed) parameter-name prefixes of a ``MetaConfig.layers`` value."""
    if layers not in LAYER_SETS:
        raise ValueError(f'meta-learned layers {layers!r}: choose one of {sorted(LAYER_SETS)}')
    return LAYER_SETS[layers]


def zero_label_layers(state, layers='trunk'):
    """Return ``state`` with its label layers zeroed (other layers untouched)."""
    zero = layer_sets(layers)[1]
    return {k: torch.zeros_like(v) if k.startswith(zero) else v for k, v in state.items()}


@dataclass
class MetaConfig:
    """What decides a meta-learned start (stored in the head-init file)."""

    outer_steps: int = 200
    """Reptile outer steps."""
    meta_batch: int = 2
    """Episodes (scenes) per outer step, split over torchrun processes."""
    inner_steps: int = 100
    """Adam steps per episode."""
    inner_lr: float = 3e-3
    inner_batch: int = 512
    """Buffer rows per inner step."""
    outer_lr: float = 1.0
    """Reptile step size at the start (decays linearly to 0)."""
    k1: int = 64
    k2: int = 64
    hidden: int = 256
    augmentations: int = 1
    """Augmented views per frame in each scene's buffer."""
    max_samples: int = 60_000
    """Buffer rows kept per scene (memory)."""
    seed: int = 0
    layers: str = 'trunk'
    """What is meta-learned: ``trunk`` or ``trunk+level2`` (see :data:`LAYER_SETS`)."""
    method: str = 'reptile'
    """``reptile``: the start moves toward each episode's adapted weights (fast fitting).
    ``fomaml``: first-order MAML, the start follows the gradient of the loss on the scene's
    *query* views (other viewpoints, other lighting) taken at the adapted weights, with Adam:
    what the memorized head gets wrong on new views is what the start learns from."""
    meta_lr: float = 1e-3
    """FOMAML's outer Adam step size at the start (decays linearly to 0)."""
    query_samples: int = 4096
    """FOMAML: query-buffer rows in each episode's outer gradient."""


def scene_buffer(extractor, images, coords, feats, cfg, seed, query=None):
    """
    Build a scene's feature buffer and head shape as ``memorize`` does.

    :param query: ``(images, coords, feats)`` of the scene's query views: their buffer (no
        augmentation, labelled by the same partition) is returned too, for FOMAML.
    :return: (buffer, (k1, k2)), or (buffer, (k1, k2), query buffer) with ``query``.
    """
    pts = np.concatenate([c[::4, ::4].reshape(-1, 3) for c in coords])
    partition = HierarchicalPartition.build(pts, cfg.k1, cfg.k2, seed=seed)
    buf = _capped(build_buffer(extractor, images, coords, feats, partition, cfg.augmentations,
                               seed, progress=False), cfg.max_samples, seed)
    if query is None:
        return buf, (partition.k1, partition.k2)
    qbuf = _capped(build_buffer(extractor, *query, partition, 0, seed, progress=False),
                   cfg.max_samples, seed)
    return buf, (partition.k1, partition.k2), qbuf


def _capped(buf, max_samples, seed):
    n = buf['desc'].shape[0]
    if n <= max_samples:
        return buf
    keep = torch.from_numpy(np.random.default_rng(seed).choice(n, max_samples, replace=False))
    return {k: v[keep] for k, v in buf.items()}


def adapt(theta, head_cfg, buffer, steps, lr, batch, seed, device):
    """Train a copy of ``theta`` on one scene's buffer: the episode's ``phi`` and losses."""
    model = RegionClassifier(head_cfg)
    model.load_state_dict(theta)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    n = buffer['desc'].shape[0]
    losses = []
    for _ in range(steps):
        loss = region_loss(model, buffer, torch.randint(n, (batch,), generator=gen), device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, losses


def adapt_many(theta, head_cfg, buffers, steps, lr, batch, seeds, device):
    """
    :func:`adapt` of several episodes at once: one vmapped head step for all of them.

    The heads are stacked along a new first dimension and the episodes' losses summed, so each
    head gets its own loss's gradient; Adam is elementwise, so each takes the steps it would take
    alone (same rows, same seeds; equal up to floating-point order). Fewer, larger kernels: what
    a GPU needs from 100 small sequential steps per episode.

    :return: list of (phi, losses) in the order of ``buffers``.
    """
    from torch.func import functional_call, stack_module_state, vmap
    models = []
    for _ in buffers:
        m = RegionClassifier(head_cfg)
        m.load_state_dict(theta)
        models.append(m.to(device).train())
    params, _ = stack_module_state(models)
    opt = torch.optim.Adam(params.values(), lr=lr)
    base = models[0]

    def one(p, x, y1, y2):
        return region_cross_entropy(*functional_call(base, p, (x, y1)), y1, y2)
    batched = vmap(one)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    losses = []
    for _ in range(steps):
        idx = [torch.randint(b['desc'].shape[0], (batch,), generator=g)
               for b, g in zip(buffers, gens)]
        x = torch.stack([b['desc'][i] for b, i in zip(buffers, idx)]).float().to(device)
        y1 = torch.stack([b['l1'][i] for b, i in zip(buffers, idx)]).to(device)
        y2 = torch.stack([b['leaf'][i] % head_cfg.k2 for b, i in zip(buffers, idx)]).to(device)
        loss = batched(params, x, y1, y2)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach())   # on the device: no sync per step
    losses = torch.stack(losses).T.cpu().tolist() if losses else [[] for _ in buffers]
    return [({k: v[j].detach().cpu() for k, v in params.items()}, losses[j])
            for j in range(len(buffers))]


def query_loss(phi, head_cfg, buffer, samples, seed, device):
    """Return the loss on ``samples`` query-buffer rows at the adapted ``phi``, and the model."""
    model = RegionClassifier(head_cfg)
    model.load_state_dict(phi)
    model.to(device).train()
    n = buffer['desc'].shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:samples]
    return region_loss(model, buffer, idx, device), model


def query_gradient(phi, head_cfg, buffer, samples, seed, device):
    """Gradient of the loss on ``samples`` rows of a query buffer, at the adapted ``phi``."""
    loss, model = query_loss(phi, head_cfg, buffer, samples, seed, device)
    loss.backward()
    return {k: p.grad.detach().cpu() for k, p in model.named_parameters()}, float(loss.detach())


def episode_plan(seed, step, meta_batch, num_scenes):
    """Scenes and inner-loop seeds of one outer step's episodes."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(num_scenes, size=meta_batch), rng.integers(2 ** 31, size=meta_batch)


def meta_train(buffers, head_cfg, cfg, device='cpu', progress=True, callback=None, every=50,
               checkpoint=None, resume=False, run_info=None, query_buffers=None, start=None,
               batched=False):
    """
    Reptile (or FOMAML, ``cfg.method``) over the scenes' buffers.

    All buffers have the head shape ``head_cfg``; FOMAML needs each scene's ``query_buffers``
    (same order). ``start``: the head state to begin from (e.g. a Reptile start that FOMAML
    then refines; its label layers are zeroed); default the seeded random head.

    :param callback: ``callback(step, seconds, theta)`` on rank 0 every ``every`` outer steps;
        a dict it returns joins that row of the history.
    :param batched: run each process's episodes of an outer step as one stacked head
        (:func:`adapt_many`): the same result up to floating-point order, fewer and larger
        kernels (a GPU). How it runs, not what it learns: not part of ``cfg``.
    :return: (theta state dict, history list of dicts).
    """
    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.meta_batch % world:
        raise ValueError(f'the meta-batch ({cfg.meta_batch}) must split evenly over {world} '
                         'processes')
    if cfg.method not in ('reptile', 'fomaml'):
        raise ValueError(f'meta-learning method {cfg.method!r}: reptile or fomaml')
    fomaml = cfg.method == 'fomaml'
    if fomaml and (query_buffers is None or len(query_buffers) != len(buffers)):
        raise ValueError('FOMAML needs a query buffer for every scene')
    local = range(rank * cfg.meta_batch // world, (rank + 1) * cfg.meta_batch // world)
    meta_layers = layer_sets(cfg.layers)[0]
    torch.manual_seed(cfg.seed)
    theta = zero_label_layers({k: v.detach().clone() for k, v in (
        start or RegionClassifier(head_cfg).state_dict()).items()}, cfg.layers)
    first, seconds, history, outer_state = 0, 0.0, [], None
    if resume and checkpoint and os.path.exists(checkpoint):
        first, seconds, history, theta, outer_state = _load(checkpoint, run_info)
    outer = _OuterAdam(theta, meta_layers, cfg.meta_lr, outer_state) if fomaml else None
    inner_avg = query_avg = float('nan')
    bar = tqdm(range(first, cfg.outer_steps), desc=f'meta-training ({cfg.method})', unit='step',
               initial=first, total=cfg.outer_steps, disable=not progress or rank != 0)
    for step in bar:
        t0 = time.perf_counter()
        scenes, seeds = episode_plan(cfg.seed, step, cfg.meta_batch, len(buffers))
        delta = {k: torch.zeros_like(v) for k, v in theta.items()}
        last, last_query = [], []
        if batched:
            adapted = adapt_many(theta, head_cfg, [buffers[scenes[j]] for j in local],
                                 cfg.inner_steps, cfg.inner_lr, cfg.inner_batch,
                                 [seeds[j] for j in local], device)
        for n, j in enumerate(local):
            phi, losses = adapted[n] if batched else adapt(
                theta, head_cfg, buffers[scenes[j]], cfg.inner_steps, cfg.inner_lr,
                cfg.inner_batch, seeds[j], device)
            if fomaml:   # the outer gradient: the query views' loss at phi
                grad, query_loss = query_gradient(phi, head_cfg, query_buffers[scenes[j]],
                                                  cfg.query_samples, seeds[j], device)
                last_query.append(query_loss)
            for k in delta:
                if k.startswith(meta_layers):
                    delta[k] += grad[k] if fomaml else phi[k] - theta[k]
            last.append(losses[-1])
        # Every episode's losses, on every rank: the history is the one-process history.
        episode_losses = torch.tensor([sum(last), sum(last_query)], dtype=torch.float64)
        if distributed:   # on the device: NCCL reduces GPU tensors only
            for k in sorted(delta):
                summed = delta[k].to(device)
                dist.all_reduce(summed)
                delta[k] = summed.cpu()
            summed = episode_losses.to(device)
            dist.all_reduce(summed)
            episode_losses = summed.cpu()
        decay = 1.0 - step / cfg.outer_steps
        if fomaml:
            theta = zero_label_layers(outer.step(theta, delta, cfg.meta_batch,
                                                 cfg.meta_lr * decay), cfg.layers)
        else:
            theta = zero_label_layers({k: theta[k] + cfg.outer_lr * decay * delta[k]
                                       / cfg.meta_batch for k in theta}, cfg.layers)
        seconds += time.perf_counter() - t0
        v = float(episode_losses[0]) / cfg.meta_batch
        inner_avg = v if np.isnan(inner_avg) else 0.9 * inner_avg + 0.1 * v
        if fomaml:
            v = float(episode_losses[1]) / cfg.meta_batch
            query_avg = v if np.isnan(query_avg) else 0.9 * query_avg + 0.1 * v
        if (step + 1) % every == 0 or step + 1 == cfg.outer_steps:
            row = {'step': step + 1, 'seconds': round(seconds, 2),
                   'inner_final_loss': round(inner_avg, 4)}
            if fomaml:   # the meta-objective: the query views' loss after the inner steps
                row['episode_query_loss'] = round(query_avg, 4)
            if callback is not None and rank == 0:
                row.update(callback(step + 1, seconds, theta) or {})
            history.append(row)
            bar.set_postfix(inner_loss=f'{inner_avg:.3f}')
            if checkpoint and rank == 0:
                tmp = checkpoint + '.tmp'
                torch.save({'format': CHECKPOINT_FORMAT, 'run_info': run_info or {},
                            'step': step + 1, 'seconds': seconds, 'history': history,
                            'theta': theta, 'outer': outer.state() if outer else None}, tmp)
                os.replace(tmp, checkpoint)
            if distributed:
                dist.barrier()
    return theta, history


def _load(path, run_info):
    state = torch.load(path, map_location='cpu', weights_only=True)
    if state.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path}: checkpoint format {state.get("format")}, expected '
                         f'{CHECKPOINT_FORMAT}')
    if state.get('run_info', {}) != (run_info or {}):
        raise ValueError(f'{path} was written by a run with other settings; resume with the '
                         'same settings, or remove the checkpoint to start over')
    return (int(state['step']), float(state['seconds']), list(state['history']),
            state['theta'], state.get('outer'))


class _OuterAdam:
    """Adam on the meta-learned layers of ``theta`` (FOMAML's outer step), resumable."""

    def __init__(self, theta, layers, lr, state=None):
        self.keys = [k for k in sorted(theta) if k.startswith(layers)]
        self.params = [torch.nn.Parameter(theta[k].clone()) for k in self.keys]
        self.opt = torch.optim.Adam(self.params, lr=lr)
        if state is not None:
            self.opt.load_state_dict(state)

    def step(self, theta, grad_sum, count, lr):
        """Return ``theta`` after one Adam step on the mean of the summed gradients."""
        with torch.no_grad():
            for k, p in zip(self.keys, self.params):
                p.copy_(theta[k])
                p.grad = grad_sum[k] / count
        for group in self.opt.param_groups:
            group['lr'] = lr
        self.opt.step()
        return {**theta, **{k: p.detach().clone() for k, p in zip(self.keys, self.params)}}

    def state(self):
        return self.opt.state_dict()


def few_step_loss(theta, head_cfg, buffers, steps, cfg, device='cpu', with_query=False):
    """
    Mean training loss after ``steps`` inner steps over ``buffers``, from ``theta``.

    With ``with_query``, ``buffers`` holds (buffer, query buffer) pairs and the result is
    (that loss, the mean loss on the query views at the same adapted weights).
    """
    losses, query_losses = [], []
    for i, b in enumerate(buffers):
        buf, qbuf = b if with_query else (b, None)
        phi, lost = adapt(theta, head_cfg, buf, steps, cfg.inner_lr, cfg.inner_batch, 1000 + i,
                          device)
        losses.append(lost[-1])
        if qbuf is not None:
            with torch.no_grad():
                query_losses.append(float(query_loss(phi, head_cfg, qbuf, cfg.query_samples,
                                                     1000 + i, device)[0]))
    if with_query:   # no scene with query views: no query loss
        return float(np.mean(losses)), (float(np.mean(query_losses)) if query_losses else None)
    return float(np.mean(losses))

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
Training the retrieval model on many scenes: SARE for the global descriptor, VOP for patches.

Global descriptor (SARE, Liu et al. ICCV 2019): for a query q, its positive p (a frame that
sees > ``pos_overlap`` of it) and hard negatives n_j (frames that see < ``neg_overlap`` of it,
or frames of other scenes, the most similar under the current model, re-mined every
``refresh_every`` steps), with squared distances d between L2-normalised descriptors:

- ``ind``:   mean_j  -log( exp(-d_qp) / (exp(-d_qp) + exp(-d_qn_j)) )
- ``joint``: -log( exp(-d_qp) / (exp(-d_qp) + sum_j exp(-d_qn_j)) )

Patch embeddings (VOP, Wei et al. WACV 2025): pairs of overlapping frames, their patches
matched geometrically (mutual, occlusion-tested). With s the cosine of every patch pair, VOP's
loss is mean_pos (1 - s)^2 + mean_neg s^2: matched patches pulled to 1, all others to 0.

The backbone is frozen: its grids are computed once (:mod:`retrieval_data`). After training,
PCA whitening is fitted on the training frames' descriptors.

Under torchrun every process holds all the data and draws the same batches (same seed); each
step's queries (and frame pairs) are split over the processes, each back-propagates its share
of the batch's loss and the gradients are summed, so N processes compute what one does.
"""

from dataclasses import asdict, dataclass
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from scene_reloc.retrieval.model import RetrievalConfig, RetrievalModel
from scene_reloc.retrieval.overlap import mutual_patch_matches, patch_correspondences
from scene_reloc_training.learn.retrieval_data import stack_grids


@dataclass
class RetrievalTrainConfig:
    """How a retrieval model is trained (stored in its manifest)."""

    steps: int = 1500
    """SARE steps (each one batch of queries)."""
    batch: int = 4
    """Queries per step."""
    negatives: int = 5
    """Hard negatives per query."""
    loss: str = 'ind'
    """SARE variant: ind or joint."""
    lr: float = 1e-3
    pos_overlap: float = 0.3
    neg_overlap: float = 0.05
    refresh_every: int = 100
    """Steps between hard-negative re-mining."""
    patch_steps: int = 600
    """VOP patch-embedding steps."""
    patch_batch: int = 1
    """Frame pairs per VOP step (split over torchrun processes)."""
    patch_lr: float = 1e-3
    seed: int = 0


def sare_loss(q, p, n, variant='ind', reduction='mean'):
    """
    SARE loss of L2-normalised descriptors: q, p (B, D), n (B, M, D).

    :param reduction: ``mean`` over the terms (``ind``: query-negative pairs; ``joint``:
        queries) or their ``sum``.
    """
    d_p = ((q - p) ** 2).sum(-1)                                   # (B,)
    d_n = ((q[:, None] - n) ** 2).sum(-1)                          # (B, M)
    if variant == 'ind':
        terms = F.softplus(d_p[:, None] - d_n)
    elif variant == 'joint':
        terms = torch.logsumexp(torch.cat([-d_p[:, None], -d_n], dim=1), dim=1) + d_p
    else:
        raise ValueError(f'SARE variant must be ind or joint, got {variant!r}')
    return terms.mean() if reduction == 'mean' else terms.sum()


def _world():
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_over_processes(params, value):
    """Sum the gradients of ``params`` and the float ``value`` over torchrun processes."""
    rank, world = _world()
    if world == 1:
        return value
    import torch.distributed as dist
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
    v = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(v)
    return float(v)


def describe_all(model, data, idx=None, whiten=False):
    """Global descriptors (N, D) of frames ``idx`` (all by default), one forward each shape."""
    idx = list(range(len(data))) if idx is None else list(idx)
    out = [None] * len(idx)
    by_shape = {}
    for k, i in enumerate(idx):
        by_shape.setdefault(tuple(data.grids[i].shape), []).append(k)
    with torch.no_grad():
        for ks in by_shape.values():
            for s in range(0, len(ks), 64):
                chunk = ks[s:s + 64]
                g = stack_grids(data, [idx[k] for k in chunk])
                d = model(g) if whiten else model.aggregate(g)
                for k, v in zip(chunk, d):
                    out[k] = v
    return torch.stack(out)


def _positives_and_negatives(data, cfg):
    """Per frame: indices of its positives, and of its candidate negatives (same scene)."""
    pos, neg_same = [], []
    for i in range(len(data)):
        s, o = data.scene[i], data.offset[data.scene[i]]
        ov = data.overlap[s]
        r = i - o
        fwd, back = ov[r], ov[:, r]
        p = np.flatnonzero((fwd > cfg.pos_overlap) & (np.arange(len(fwd)) != r)) + o
        n = np.flatnonzero(np.maximum(fwd, back) < cfg.neg_overlap) + o
        pos.append(p)
        neg_same.append(n)
    return pos, neg_same


def _mine(model, data, queries, pos, neg_same, cfg, rng):
    """For each query: its hardest positive-free negatives under the current model."""
    desc = describe_all(model, data)
    sims = desc @ desc.T
    out = {}
    for i in queries:
        cand = np.concatenate([neg_same[i], np.flatnonzero(data.scene != data.scene[i])])
        if len(cand) < cfg.negatives:
            continue
        order = cand[np.argsort(-sims[i, cand].numpy())]
        out[i] = order[:max(cfg.negatives * 4, cfg.negatives)]
    return out, desc


def train_global(model, data, cfg, progress=True):
    """Train the adapter and aggregator with SARE; returns the loss history."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pos, neg_same = _positives_and_negatives(data, cfg)
    queries = [i for i in range(len(data)) if len(pos[i])]
    if not queries:
        raise ValueError(f'no frame has a positive (overlap > {cfg.pos_overlap}): give scenes '
                         'with overlapping views')
    params = [p for n, p in model.named_parameters()
              if n.startswith(('adapter', 'aggregator'))]
    rank, world = _world()
    if cfg.batch % world:
        raise ValueError(f'--batch {cfg.batch} must be a multiple of the {world} processes')
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.steps, 1))
    history, hard, desc = [], {}, None
    bar = tqdm(range(cfg.steps), desc='SARE', unit='step', disable=not progress)
    for step in bar:
        if step % cfg.refresh_every == 0:
            model.eval()
            hard, desc = _mine(model, data, queries, pos, neg_same, cfg, rng)
            model.train()
        batch = rng.choice([q for q in queries if q in hard], cfg.batch)
        q_idx, p_idx, n_idx = [], [], []
        for q in batch:
            # The positive the current model finds closest (NetVLAD's weak-supervision rule).
            p = pos[q][int(torch.argmax(desc[pos[q]] @ desc[q]))]
            n = rng.choice(hard[q], cfg.negatives, replace=False)
            q_idx.append(q)
            p_idx.append(p)
            n_idx.extend(n)
        # This process's share of the batch; its loss is its part of the batch mean.
        mine = list(range(rank, len(q_idx), world))
        dq = _forward(model, data, [q_idx[k] for k in mine])
        dp = _forward(model, data, [p_idx[k] for k in mine])
        dn = _forward(model, data, [n_idx[k * cfg.negatives + m] for k in mine
                                    for m in range(cfg.negatives)]).reshape(len(mine),
                                                                              cfg.negatives, -1)
        terms = len(q_idx) * (cfg.negatives if cfg.loss == 'ind' else 1)
        loss = sare_loss(dq, dp, dn, cfg.loss, reduction='sum') / terms
        opt.zero_grad()
        loss.backward()
        total = _sum_over_processes(params, float(loss.detach()))
        opt.step()
        sched.step()
        history.append(total)
        bar.set_postfix(loss=f'{np.mean(history[-20:]):.3f}')
    model.eval()
    return history


def _forward(model, data, idx):
    return torch.cat([model.aggregate(stack_grids(data, [i])) for i in idx])


def _patch_pairs(data, cfg):
    pairs = []
    for i in range(len(data)):
        s, o = data.scene[i], data.offset[data.scene[i]]
        row = data.overlap[s][i - o]
        pairs += [(i, j + o) for j in np.flatnonzero(row > cfg.pos_overlap) if j + o != i]
    return pairs


def vop_patch_loss(ea, eb, matches):
    """
    VOP's patch loss: matched pairs' cosine pulled to 1, every other pair's to 0.

    :param ea: (Pa, E) L2-normalised patch embeddings of one frame.
    :param eb: (Pb, E) the same of an overlapping frame.
    :param matches: (M, 2) long tensor of (patch of a, patch of b).
    """
    s = ea @ eb.T
    pos = torch.zeros_like(s, dtype=torch.bool)
    pos[matches[:, 0], matches[:, 1]] = True
    return ((1 - s[pos]) ** 2).mean() + (s[~pos] ** 2).mean()


def _patch_matches(data, a, b, patch_px):
    return patch_correspondences(data.depths[a], data.Ks[a], data.poses[a], data.depths[b],
                                 data.Ks[b], data.poses[b], patch_px)


def train_patches(model, data, cfg, progress=True):
    """Train the patch projection with VOP's loss on geometric patch matches."""
    rng = np.random.default_rng(cfg.seed + 1)
    pairs = _patch_pairs(data, cfg)
    if not pairs:
        raise ValueError('no overlapping frame pairs to train patch embeddings on')
    patch_px = model.cfg.patch_pool * 8 // 2      # the depths are at half resolution
    params = list(model.patch_proj.parameters())
    opt = torch.optim.Adam(params, lr=cfg.patch_lr)
    rank, world = _world()
    history = []
    bar = tqdm(range(cfg.patch_steps), desc='VOP patches', unit='step', disable=not progress)
    for _ in bar:
        # Every process labels the whole batch (cheap), so all know how many pairs count.
        batch = []
        for _ in range(cfg.patch_batch):
            i, j = pairs[int(rng.integers(len(pairs)))]
            m = mutual_patch_matches(_patch_matches(data, i, j, patch_px),
                                     _patch_matches(data, j, i, patch_px))
            batch.append((i, j, m))
        valid = [b for b in batch if len(b[2]) >= 4]
        if not valid:
            continue
        loss = torch.zeros(())
        for i, j, m in valid[rank::world]:
            ea = model.patches(stack_grids(data, [i]))[0].flatten(0, 1)
            eb = model.patches(stack_grids(data, [j]))[0].flatten(0, 1)
            ok = (m[:, 0] < len(ea)) & (m[:, 1] < len(eb))
            loss = loss + vop_patch_loss(ea, eb, torch.from_numpy(m[ok])) / len(valid)
        opt.zero_grad()
        if loss.requires_grad:
            loss.backward()
        total = _sum_over_processes(params, float(loss.detach()))
        opt.step()
        history.append(total)
        bar.set_postfix(loss=f'{np.mean(history[-20:]):.3f}')
    model.eval()
    return history


def train_retrieval(data, model_cfg: RetrievalConfig, cfg: RetrievalTrainConfig,
                    progress=True):
    """
    Initialise, train and whiten a retrieval model on ``data``.

    :return: (model, info dict with the configuration and loss histories).
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = RetrievalModel(model_cfg)
    if model_cfg.aggregator == 'netvlad':
        rng = np.random.default_rng(cfg.seed)
        local = torch.cat([g.reshape(-1, g.shape[-1]).float() for g in data.grids])
        sample = local[torch.from_numpy(rng.choice(len(local), min(len(local), 50_000),
                                                   replace=False))]
        model.aggregator.init_from_descriptors(model.local(sample[None])[0].detach(),
                                               seed=cfg.seed)
    sare = train_global(model, data, cfg, progress) if cfg.steps else []
    patches = train_patches(model, data, cfg, progress) if cfg.patch_steps else []
    if model.whitening is not None:
        model.whitening.fit(describe_all(model, data))
    info = {'train': asdict(cfg), 'frames': len(data), 'scenes': len(data.overlap),
            'sare_loss_first_last': _first_last(sare),
            'patch_loss_first_last': _first_last(patches),
            'seconds': round(time.perf_counter() - t0, 1)}
    return model, info


def _first_last(history):
    """Mean loss over the first and the last quarter of a run (at most 50 steps each)."""
    k = min(50, max(1, len(history) // 4))
    return [round(float(np.mean(history[:k])), 4), round(float(np.mean(history[-k:])), 4)] \
        if history else [None, None]

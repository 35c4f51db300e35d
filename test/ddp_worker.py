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
A few steps of pretraining or meta-training, alone or under torchrun (test_pretrain_ddp.py).

Writes what this process trained to OUT/rank<r>.pt. ``toy_scenes`` and ``toy_buffers`` are the
tests' small training material.
"""

import argparse
import os
import sys

import numpy as np
import torch

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.landmark_head import LandmarkHeadConfig
from scene_reloc.partition import HierarchicalPartition
from scene_reloc.region_head import RegionHeadConfig
from scene_reloc_training.learn.meta_train import meta_train, MetaConfig
from scene_reloc_training.learn.preserve import Preserve
from scene_reloc_training.learn.pretrain_backbone import SceneData, train_whole_network


def toy_scenes(dim, seed=0, heads=('landmark', 'region')):
    """Two random-image scenes, one with landmarks only, one with ``heads``' labels."""
    rng = np.random.default_rng(seed)
    out = []
    for n, kinds in ((5, ('landmark',)), (7, heads)):
        imgs = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(4)]
        s = SceneData(imgs)
        if 'landmark' in kinds:
            s.xy, s.visible = rng.uniform(10, 60, (4, n, 2)), rng.random((4, n)) > 0.2
            s.head_cfg = LandmarkHeadConfig(in_dim=dim, hidden=8, num_landmarks=n,
                                            landmarks_per_head=n)
        if 'region' in kinds:
            s.coords = [rng.uniform(0, 3, (64, 96, 3)).astype(np.float32) for _ in imgs]
            s.partition = HierarchicalPartition.build(
                np.concatenate([c.reshape(-1, 3) for c in s.coords]), 4, 4, seed=0)
            s.region_cfg = RegionHeadConfig(in_dim=dim, hidden=16, k1=4, k2=4)
        out.append(s)
    return out


def planar_scene(dim, frames=4, shift=6, size=(64, 96), seed=0, z=1.0):
    """
    Build a textured plane seen by a camera sliding sideways, 1 cm of scene a pixel.

    Frame k+1 is frame k moved ``shift`` pixels to the left: where a pixel of one frame lies in
    another is known exactly. Region labels and overlapping frames (``partners``) are set.
    """
    import cv2

    from scene_reloc_training.learn.matching import overlap_partners
    rng = np.random.default_rng(seed)
    H, W = size
    noise = rng.integers(0, 255, (H, W + shift * frames, 3)).astype(np.uint8)
    canvas = cv2.GaussianBlur(noise, (0, 0), 1.2)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    imgs, coords = [], []
    for k in range(frames):
        imgs.append(np.ascontiguousarray(canvas[:, k * shift:k * shift + W]))
        coords.append(np.stack([(u + k * shift) * 0.01, v * 0.01, np.full_like(u, z)], -1))
    s = SceneData(imgs, coords=coords, partners=overlap_partners(coords))
    s.partition = HierarchicalPartition.build(
        np.concatenate([c.reshape(-1, 3) for c in coords]), 4, 4, seed=0)
    s.region_cfg = RegionHeadConfig(in_dim=dim, hidden=16, k1=4, k2=4)
    return s


def toy_buffers(num, dim=16, k1=4, k2=4, rows=4000, seed=0, family=0, offset=3.0,
                query_rows=0, query_noise=0.5):
    """
    Feature buffers of a family of toy scenes.

    Every scene of a ``family`` shares the descriptor distribution (offset mean, correlated
    scale): what a meta-learned start can learn. Labels are each scene's own: the nearest of
    its random region centres, so nothing about a new scene's labels is known in advance.
    With ``query_rows``, each scene is a (buffer, query buffer) pair: the query rows are new
    points of the same scene (same labels) seen with ``query_noise`` on their descriptors,
    like a new viewpoint.
    """
    mix = np.random.default_rng(family).normal(0, 1, (dim, dim)) * 2.0
    rng = np.random.default_rng([family, seed])
    out = []
    for _ in range(num):
        z = rng.normal(0, 1, (rows, dim))
        centres = rng.normal(0, 1, (k1 * k2, dim))

        def labelled(z, desc, centres=centres):
            leaf = np.argmin(((z[:, None] - centres[None]) ** 2).sum(-1), axis=1)
            return {'desc': torch.from_numpy(desc @ mix + offset).half(),
                    'leaf': torch.from_numpy(leaf), 'l1': torch.from_numpy(leaf // k2)}
        buf = labelled(z, z)
        if query_rows:
            zq = rng.normal(0, 1, (query_rows, dim))
            buf = (buf, labelled(zq, zq + rng.normal(0, query_noise, zq.shape)))
        out.append(buf)
    return out


def retrieval_state(out, rank):
    """SARE + VOP on two tiny rendered rooms (each process renders its own copy)."""
    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc.retrieval.model import RetrievalConfig
    from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
    from scene_reloc_training.learn.retrieval_data import load_retrieval_data
    from scene_reloc_training.learn.retrieval_training import RetrievalTrainConfig, train_retrieval
    roots = []
    for seed in (31, 32):
        root = os.path.join(out, f'rooms{rank}', str(seed))
        write_synthetic_scene(root, seed=seed, num_memorize=8, num_query=8, width=160,
                              height=120, trajectory_frames=100)
        roots.append(root)
    ex = FeatureExtractor('handcrafted', device='cpu')
    data = load_retrieval_data(roots, ex, max_frames=16, progress=False)
    cfg = RetrievalTrainConfig(steps=4, batch=4, negatives=2, refresh_every=2, patch_steps=3,
                               patch_batch=2)
    model, _ = train_retrieval(data, RetrievalConfig(clusters=4, local_dim=ex.descriptor_dim,
                                                     dim=8, patch_dim=16), cfg, progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--out', required=True)
    p.add_argument('--mode', default='pretrain',
                   choices=['pretrain', 'pretrain-matching', 'meta', 'meta-fomaml',
                            'retrieval'])
    p.add_argument('--iterations', type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(1)
    rank = 0
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        torch.distributed.init_process_group('gloo')
        rank = torch.distributed.get_rank()
    if a.mode in ('pretrain', 'pretrain-matching'):
        torch.manual_seed(0)
        net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
        # With the detector / descriptor losses against a frozen copy (the default from weights):
        # per-image means too, so the ranks must still compute what one process computes. The
        # matching loss: pairs of views (one per process here), a per-image mean as well.
        matching = a.mode == 'pretrain-matching'
        net, heads, _ = train_whole_network(
            net, [planar_scene(net.dim)] if matching else toy_scenes(net.dim), a.iterations,
            batch_size=4, progress=False, every=a.iterations, preserve=Preserve(1.0, 1.0, 0.1),
            matching_weight=1.0 if matching else 0.0)
        state = {**{f'net.{k}': v for k, v in net.state_dict().items()},
                 **{f'heads.{k}': v for k, v in heads.state_dict().items()}}
    elif a.mode == 'retrieval':
        state = retrieval_state(a.out, rank)
    elif a.mode == 'meta':
        cfg = MetaConfig(outer_steps=a.iterations, meta_batch=4, inner_steps=3, inner_batch=64,
                         k1=4, k2=4, hidden=16)
        theta, _ = meta_train(toy_buffers(3), RegionHeadConfig(16, 16, 4, 4), cfg,
                              progress=False)
        state = dict(theta)
    else:   # first-order MAML: the ranks' query gradients summed, then one outer Adam step
        cfg = MetaConfig(outer_steps=a.iterations, meta_batch=4, inner_steps=3, inner_batch=64,
                         k1=4, k2=4, hidden=16, method='fomaml', meta_lr=1e-2,
                         query_samples=128)
        pairs = toy_buffers(3, query_rows=300)
        theta, history = meta_train([b for b, _ in pairs], RegionHeadConfig(16, 16, 4, 4), cfg,
                                    progress=False, query_buffers=[q for _, q in pairs],
                                    every=1)
        # the logged losses cover every rank's episodes: the same history as one process
        state = {**theta, 'history.losses': torch.tensor(
            [[h['inner_final_loss'], h['episode_query_loss']] for h in history])}
    os.makedirs(a.out, exist_ok=True)
    torch.save(state, os.path.join(a.out, f'rank{rank}.pt'))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
    # Skip the interpreter's teardown: once in a few dozen runs gloo's threads race the static
    # destructors and abort ("terminate called without an active exception") after the results
    # are written; the test then saw a failed process for a finished job.
    sys.stdout.flush()
    os._exit(0)

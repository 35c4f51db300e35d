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

"""Retrieval training on synthetic rooms: labels from geometry, SARE and VOP losses that learn."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scene_reloc.backbones import FeatureExtractor
from scene_reloc.retrieval.model import RetrievalConfig, RetrievalModel
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
from scene_reloc_training.learn.retrieval_data import load_retrieval_data
from scene_reloc_training.learn.retrieval_training import (
    describe_all,
    RetrievalTrainConfig,
    sare_loss,
    train_retrieval,
    vop_patch_loss,
)

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')


@pytest.fixture(scope='module')
def rooms(tmp_path_factory):
    roots = []
    for seed, size in ((11, (5.0, 4.0, 2.6)), (12, (6.5, 3.5, 2.8))):
        root = str(tmp_path_factory.mktemp(f'room{seed}'))
        write_synthetic_scene(root, seed=seed, num_memorize=12, num_query=12, width=160,
                              height=120, trajectory_frames=150, room_size=size)
        roots.append(root)
    return roots


def test_sare_losses_prefer_the_positive():
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    n = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
    for variant in ('ind', 'joint'):
        near = sare_loss(q, q, n, variant)               # positive = the query itself
        far = sare_loss(q, -q, n, variant)               # positive = the opposite point
        assert near < far
    # ind with one negative: -log(e^-dp / (e^-dp + e^-dn)) = softplus(dp - dn)
    p = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    dp, dn = ((q - p) ** 2).sum(-1), ((q - n[:, 0]) ** 2).sum(-1)
    assert torch.isclose(sare_loss(q, p, n[:, :1], 'ind'),
                         torch.nn.functional.softplus(dp - dn).mean())
    with pytest.raises(ValueError):
        sare_loss(q, p, n, 'sum')


def test_vop_patch_loss_is_zero_for_ideal_embeddings():
    e = torch.eye(6)
    m = torch.stack([torch.arange(6), torch.arange(6)], 1)
    assert vop_patch_loss(e, e, m) == 0           # matched: cos 1; unmatched: cos 0
    # shifted by one: every match at cos 0 (loss 1), 6 of the 30 non-matches at cos 1 (0.2)
    assert torch.isclose(vop_patch_loss(e, torch.roll(e, 1, 0), m), torch.tensor(1.2))


def test_retrieval_training_learns_scenes_apart(rooms):
    ex = FeatureExtractor('handcrafted', device='cpu')
    data = load_retrieval_data(rooms, ex, max_frames=24, progress=False)
    assert len(data) == 48 and data.pair_overlap(0, 30) == 0.0
    own = np.array([data.overlap[0][i, i] for i in range(24)])
    assert np.all(own == 1.0)
    cfg = RetrievalTrainConfig(steps=60, refresh_every=20, patch_steps=60, seed=0)
    mcfg = RetrievalConfig(clusters=8, local_dim=ex.descriptor_dim, dim=16, patch_dim=32)
    model, info = train_retrieval(data, mcfg, cfg, progress=False)
    first, last = info['sare_loss_first_last']
    assert last < first
    assert info['patch_loss_first_last'][1] < info['patch_loss_first_last'][0]
    d = describe_all(model, data, whiten=True).numpy()
    assert d.shape == (48, 16) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    sims = d @ d.T
    np.fill_diagonal(sims, -2)
    same_scene = data.scene[np.argmax(sims, 1)] == data.scene
    assert same_scene.mean() >= 0.9


def test_train_retrieval_cli_writes_a_loadable_model(rooms, tmp_path):
    out = str(tmp_path / 'r.safetensors')
    r = subprocess.run([SCRIPT, 'train-retrieval', '--data', *rooms, '--frames', 'all',
                        '--out', out, '--backbone', 'handcrafted', '--steps', '10',
                        '--patch-steps', '10', '--clusters', '4', '--dim', '8',
                        '--device', 'cpu', '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary['frames'] == 48
    model, manifest = RetrievalModel.load(out)
    assert manifest['backbone']['name'] == 'handcrafted' and model.cfg.dim == 8
    assert json.load(open(out + '.json'))['train']['steps'] == 10


def test_the_shipped_retrieval_model_fits_the_released_alike_n_weights_only():
    from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
    from scene_reloc.retrieval.database import model_sha256, UNTRAINED
    from scene_reloc.weights import KNOWN_SHA256
    from scene_reloc_training.memorize.head_init import SHIPPED
    from scene_reloc_training.memorize.retrieval_db import resolve_retrieval_model
    dim = AlikeNet(*ALIKE_CONFIGS['alike-n']).dim
    path = os.path.join(SHIPPED, 'retrieval-alike-n.safetensors')
    model, ref = resolve_retrieval_model('auto', 'alike-n', KNOWN_SHA256['alike-n'], dim)
    assert ref['model'] == path and ref['sha256'] == model_sha256(model)
    assert model.cfg.aggregator == 'netvlad' and model.cfg.dim == 256
    # A trained model: the adapter moved off its identity start, whitening was fitted.
    assert model.adapter.weight.abs().max() > 0 and model.whitening.proj.abs().sum() > 0
    g, p = model.describe(torch.randn(30, 40, dim))
    assert g.shape == (256,) and np.isclose(np.linalg.norm(g), 1, atol=1e-5)
    assert np.all(np.isfinite(p))
    # Other weights of the same backbone, or another backbone: the built-in untrained GeM.
    assert resolve_retrieval_model('auto', 'alike-n', '0' * 64, dim)[1]['model'] == UNTRAINED
    assert resolve_retrieval_model('auto', 'handcrafted', None, 64)[1]['model'] == UNTRAINED
    with pytest.raises(ValueError, match='does not fit'):
        resolve_retrieval_model(path, 'alike-t', KNOWN_SHA256.get('alike-t'), dim)


def test_a_scene_without_queries_trains_on_its_memorized_frames(rooms, tmp_path):
    """A corpus view may hold an empty query.txt (a real scene too small to spare queries)."""
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc_training.learn.retrieval_data import scene_frame_stems
    root = rooms[0]
    folder = PosedFrameFolder(root)
    memorized = parse_frame_list(os.path.join(root, 'memorize.txt'), folder)
    both = scene_frame_stems(folder, root)
    assert both[:len(memorized)] == memorized and len(both) > len(memorized)
    with open(os.path.join(root, 'query.txt')) as f:
        queries = f.read()
    try:
        with open(os.path.join(root, 'query.txt'), 'w') as f:
            f.write('# no queries\n')
        assert scene_frame_stems(folder, root) == memorized
    finally:
        with open(os.path.join(root, 'query.txt'), 'w') as f:
            f.write(queries)

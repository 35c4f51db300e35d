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

import os

from conftest import SHARED
import numpy as np
import pytest
import torch

from scene_reloc.backbones import BackboneError, FeatureExtractor
from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet

WEIGHTS = os.path.join(SHARED, 'weights')
REFERENCE = os.path.join(WEIGHTS, 'alike_reference_outputs.npz')


def random_alike(name, seed=0):
    torch.manual_seed(seed)
    net = AlikeNet(*ALIKE_CONFIGS[name]).eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize('name', sorted(ALIKE_CONFIGS))
def test_sampled_descriptors_equal_the_dense_map(name):
    """The cheap per-point path must give the full-resolution head's numbers."""
    net = random_alike(name)
    x = torch.rand(1, 3, 70, 90)  # not a multiple of 32: exercises the padding
    with torch.no_grad():
        desc, scores = net.dense(x)
        levels, size, padded = net(x)
        ys, xs = torch.meshgrid(torch.arange(0, 70, 7), torch.arange(0, 90, 9), indexing='ij')
        pts = torch.stack([xs, ys], -1).reshape(1, -1, 2).float()
        sampled = net.sample(levels, padded, pts)[0]
        score2 = net.score_map(levels, size, padded)
    assert torch.allclose(sampled, desc[0, :, ys.flatten(), xs.flatten()].T, atol=1e-5)
    assert torch.allclose(score2, scores, atol=1e-5)
    assert desc.shape == (1, ALIKE_CONFIGS[name][4], 70, 90)


def test_state_dict_loads_with_weights_only_and_records_sha(tmp_path):
    net = random_alike('alike-t', seed=3)
    path = str(tmp_path / 'alike-t.pth')
    torch.save(net.state_dict(), path)
    fe = FeatureExtractor('alike-t', path, 'cpu')
    assert len(fe.weights_sha256) == 64
    img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    f = fe.extract(img, max_keypoints=50)
    assert f.grid_desc.shape == (8, 10, 64) and f.keypoint_desc.shape[1] == 64
    assert torch.allclose(f.grid_desc.norm(dim=-1), torch.ones(8, 10), atol=1e-4)


def test_backbone_errors_say_what_to_do(tmp_path):
    with pytest.raises(BackboneError, match='fetch-weights'):
        FeatureExtractor('alike-n', None, 'cpu')
    with pytest.raises(BackboneError, match='unknown backbone'):
        FeatureExtractor('resnet-9000', None, 'cpu')
    bad = tmp_path / 'bad.pth'
    torch.save({'nothing': torch.zeros(1)}, str(bad))
    with pytest.raises(BackboneError, match='cannot load'):
        FeatureExtractor('alike-n', str(bad), 'cpu')
    if not torch.cuda.is_available():
        with pytest.raises(BackboneError, match='no CUDA'):
            FeatureExtractor('handcrafted', None, 'cuda')


def test_handcrafted_descriptors_are_distinctive_and_stable():
    rng = np.random.default_rng(0)
    img = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    fe = FeatureExtractor('handcrafted', None, 'cpu')
    a = fe.extract(img).grid_desc.reshape(-1, fe.descriptor_dim)
    brighter = np.clip(img.astype(np.float32) * 1.3, 0, 255).astype(np.uint8)
    b = fe.extract(brighter).grid_desc.reshape(-1, fe.descriptor_dim)
    same = (a * b).sum(-1)
    other = (a @ b.T).fill_diagonal_(-1).max(1).values
    assert same.mean() > 0.9
    assert (same > other).float().mean() > 0.9  # each cell is nearest to itself


@pytest.mark.skipif(not os.path.exists(REFERENCE), reason='../shared/weights not present')
@pytest.mark.parametrize('name', sorted(ALIKE_CONFIGS))
def test_reproduces_released_alike_reference_outputs(name):
    """The released ALIKE weights give the original implementation's outputs (1e-5)."""
    ref = np.load(REFERENCE)
    fe = FeatureExtractor(name, os.path.join(WEIGHTS, f'{name}.pth'), 'cpu')
    for image in ('redkitchen_000350', 'tum_fr2desk_0'):
        x = fe.to_tensor(ref[f'{image}__input_rgb_u8'])
        with torch.no_grad():
            desc, scores = fe.net.dense(x)
            levels, size, padded = fe.net(x)
            ys, xs = torch.meshgrid(torch.arange(4, 240, 8), torch.arange(4, 320, 8),
                                    indexing='ij')
            pts = torch.stack([xs, ys], -1).reshape(1, -1, 2).float()
            sampled = fe.net.sample(levels, padded, pts)[0].T.reshape(-1, 30, 40)
        want_d = ref[f'{name}__{image}__desc_grid8']
        want_s = ref[f'{name}__{image}__scores']
        assert np.abs(desc[0, :, 4::8, 4::8].numpy() - want_d).max() < 1e-5
        assert np.abs(sampled.numpy() - want_d).max() < 1e-5
        assert np.abs(scores[0].numpy() - want_s).max() < 1e-5
        assert np.abs(fe.net.score_map(levels, size, padded)[0].numpy() - want_s).max() < 1e-5

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
from scene_reloc.backbones.onnx_runtime import cache_dir

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


def _saved_alike(tmp_path, name, seed=0):
    path = str(tmp_path / f'{name}-{seed}.pth')
    torch.save(random_alike(name, seed).state_dict(), path)
    return path


def _same_keypoints(a, b):
    """Match keypoints of two extractions by position; return b's index for each of a's."""
    d = (a.keypoints[:, None].double() - b.keypoints[None].double()).norm(dim=-1)
    dist, idx = d.min(dim=1)
    assert (dist < 1e-3).all(), f'{int((dist >= 1e-3).sum())} keypoints differ'
    return idx


@pytest.mark.parametrize('name', sorted(ALIKE_CONFIGS))
@pytest.mark.parametrize('size', [(120, 160), (150, 200)])   # 150 x 200: padded inside
def test_onnxruntime_gives_the_torch_features(tmp_path, name, size):
    """The exported graph (encoder, score map, NMS) + torch sampling = the torch path."""
    path = _saved_alike(tmp_path, name)
    ort = FeatureExtractor(name, path, 'cpu', runtime='onnxruntime')
    ref = FeatureExtractor(name, path, 'cpu', runtime='torch')
    assert (ort.runtime, ref.runtime) == ('onnxruntime', 'torch')
    rng = np.random.default_rng(1)
    img = (rng.random((*size, 3)) * 255).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(np.repeat(img[::4, ::4], 4, 0), 4, 1)[:size[0], :size[1]])
    a, b = ort.extract(img, 300), ref.extract(img, 300)
    assert len(a.keypoints) == len(b.keypoints) > 50
    idx = _same_keypoints(a, b)
    torch.testing.assert_close(a.keypoint_desc, b.keypoint_desc[idx], atol=1e-4, rtol=0)
    torch.testing.assert_close(a.keypoint_scores, b.keypoint_scores[idx], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.grid_desc, b.grid_desc, atol=1e-4, rtol=0)
    x = ref.to_tensor(np.stack([img, img[::-1].copy()]))
    torch.testing.assert_close(ort.grid_features(x), ref.grid_features(x), atol=1e-4, rtol=0)


def test_grid_is_sampled_only_when_asked_and_cells_match_it(tmp_path):
    fe = FeatureExtractor('alike-t', _saved_alike(tmp_path, 'alike-t'), 'cpu')
    img = (np.random.default_rng(2).random((96, 128, 3)) * 255).astype(np.uint8)
    f = fe.extract(img, 100)
    assert f._grid is None and f.grid_hw == (12, 16)
    cells = torch.tensor([0, 5, 17, 191])
    some = f.grid_at(cells)
    assert f._grid is None                       # sampling cells did not build the grid
    torch.testing.assert_close(some, f.grid_desc.reshape(-1, 64)[cells], atol=1e-6, rtol=0)
    torch.testing.assert_close(f.grid_at(cells), some, atol=1e-6, rtol=0)


def test_exported_graph_is_cached_and_a_damaged_cache_is_rebuilt(tmp_path, caplog):
    path = _saved_alike(tmp_path, 'alike-t', seed=5)
    first = FeatureExtractor('alike-t', path, 'cpu', runtime='onnxruntime')
    graphs = first._dense.paths
    assert sorted(graphs) == ['encoder', 'query']
    for graph in graphs.values():
        assert graph.startswith(os.path.join(cache_dir(), 'onnx')) and os.path.exists(graph)
        assert first.weights_sha256 in os.path.basename(graph)
    img = (np.random.default_rng(3).random((64, 96, 3)) * 255).astype(np.uint8)
    want = first.extract(img, 50).keypoint_desc
    with open(graphs['query'], 'wb') as f:
        f.write(b'not an onnx graph')
    again = FeatureExtractor('alike-t', path, 'cpu', runtime='onnxruntime')
    assert 'exporting them again' in caplog.text
    torch.testing.assert_close(again.extract(img, 50).keypoint_desc, want)
    assert open(graphs['query'], 'rb').read(4) != b'not '


def test_runtime_choice_and_its_errors(tmp_path):
    assert FeatureExtractor('handcrafted', None, 'cpu').runtime == 'torch'    # auto
    with pytest.raises(BackboneError, match='torch only'):
        FeatureExtractor('handcrafted', None, 'cpu', runtime='onnxruntime')
    with pytest.raises(BackboneError, match='unknown runtime'):
        FeatureExtractor('handcrafted', None, 'cpu', runtime='tensorrt')
    path = _saved_alike(tmp_path, 'alike-t')
    assert FeatureExtractor('alike-t', path, 'cpu').runtime == 'onnxruntime'  # auto on CPU


@pytest.mark.skipif(not os.path.exists(REFERENCE), reason='../shared/weights not present')
@pytest.mark.parametrize('name', sorted(ALIKE_CONFIGS))
def test_onnxruntime_reproduces_released_alike_reference_outputs(name):
    """
    The exported graph of the released weights gives the original outputs.

    Descriptors to 1e-5, scores to 2e-5 (ONNX Runtime sums the convolutions in another order).
    """
    ref = np.load(REFERENCE)
    fe = FeatureExtractor(name, os.path.join(WEIGHTS, f'{name}.pth'), 'cpu',
                          runtime='onnxruntime')
    for image in ('redkitchen_000350', 'tum_fr2desk_0'):
        x = fe.to_tensor(ref[f'{image}__input_rgb_u8'])
        levels, _, padded, scores, _ = fe._dense_levels(x)
        ys, xs = torch.meshgrid(torch.arange(4, 240, 8), torch.arange(4, 320, 8), indexing='ij')
        pts = torch.stack([xs, ys], -1).reshape(1, -1, 2).float()
        sampled = fe.net.sample(levels, padded, pts)[0].T.reshape(-1, 30, 40)
        assert np.abs(sampled.numpy() - ref[f'{name}__{image}__desc_grid8']).max() < 1e-5
        assert np.abs(scores[0, 0, :240, :320].numpy() - ref[f'{name}__{image}__scores']).max() \
            < 2e-5


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

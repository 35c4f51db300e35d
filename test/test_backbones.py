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
import torch.nn.functional as F

from scene_reloc.backbones import BackboneError, FeatureExtractor
from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet, bilinear_at
from scene_reloc.backbones.onednn import onednn_available, onednn_works, OnednnDense
from scene_reloc.backbones.onnx_runtime import cache_dir
from scene_reloc.keypoints import nms_peaks

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
    want = 'onednn' if onednn_available() and onednn_works() else 'onnxruntime'
    assert FeatureExtractor('alike-t', path, 'cpu').runtime == want    # auto on the CPU
    if want == 'onnxruntime':
        with pytest.raises(BackboneError, match='AMX'):
            FeatureExtractor('alike-t', path, 'cpu', runtime='onednn')
    with pytest.raises(BackboneError, match='torch only'):
        FeatureExtractor('handcrafted', None, 'cpu', runtime='onednn')


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


def test_window_max_nms_equals_max_pooling():
    """The separable NMS used outside ONNX export keeps exactly max_pool2d's peaks."""
    g = torch.Generator().manual_seed(0)
    for shape in ((1, 1, 37, 53), (2, 1, 8, 9)):
        x = torch.randn(*shape, generator=g)
        x[..., 3:6, 3:6] = 1.5                      # a plateau: ties are all kept, as before
        for r in (1, 2, 3):
            want = torch.where(x == F.max_pool2d(x, 2 * r + 1, stride=1, padding=r), x, 0)
            assert torch.equal(nms_peaks(x, r), want)


def test_bilinear_at_reads_any_dtype_as_grid_sample():
    """bf16 levels are read at 4 neighbours per point: grid_sample's numbers, in float32."""
    g = torch.Generator().manual_seed(1)
    padded = (64, 96)
    pts = torch.rand(2, 300, 2, generator=g) * torch.tensor([95.0, 63.0])
    pts[:, :4] = torch.tensor([[0.0, 0.0], [95.0, 63.0], [95.0, 0.0], [17.25, 63.0]])
    grid = torch.stack([2 * pts[..., 0] / 95 - 1, 2 * pts[..., 1] / 63 - 1], -1)[:, None]
    for size in ((64, 96), (32, 48), (8, 12), (2, 3)):
        level = torch.randn(2, 5, *size, generator=g)
        want = F.grid_sample(level, grid, align_corners=True)[:, :, 0].transpose(1, 2)
        torch.testing.assert_close(bilinear_at(level, pts, padded), want, atol=2e-5, rtol=0)
        low = level.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        want = F.grid_sample(low.float(), grid, align_corners=True)[:, :, 0].transpose(1, 2)
        got = bilinear_at(low, pts, padded)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize('name', sorted(ALIKE_CONFIGS))
def test_fused_onednn_convolutions_compute_the_network(name):
    """BatchNorm folded, ReLU and residual fused (fp32 here): the torch network's numbers."""
    net = random_alike(name, seed=3)
    x = torch.rand(1, 3, 96, 128)
    dense = OnednnDense(net, dtype=torch.float32)
    levels, scores, peaks = dense(x)
    with torch.no_grad():
        want = net.encode(x)
        want_scores = net.padded_score_map(want, (96, 128))
    for a, b in zip(levels, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores, want_scores, atol=1e-5, rtol=0)
    assert torch.equal(peaks, nms_peaks(scores))
    assert (peaks > 0).sum() > 20


def test_onednn_bf16_input_holds_every_grey_level_exactly():
    """
    Feed the bf16 network the 8-bit image itself.

    Grey level g / 255 rounded to bf16 moves a bright pixel by up to half a level (a loss of
    SLD recall against fp32 on real frames).
    """
    dense = OnednnDense(random_alike('alike-t', seed=2))   # converting needs no AMX
    grey = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    x = dense.image_in(grey / 255.0)
    assert x.dtype == torch.bfloat16
    assert torch.equal(x.float(), grey)


@pytest.mark.skipif(not (onednn_available() and onednn_works()),
                    reason='the bf16 oneDNN runtime needs a CPU with AMX')
def test_onednn_bf16_features_are_the_fp32_features_within_rounding(tmp_path):
    """
    Check the runtime `auto` picks on AMX CPUs against fp32 torch.

    Keypoints at the same places (bf16 rounding moves the sub-pixel peak of a few), the same
    descriptors to a cosine of 0.99.
    """
    path = _saved_alike(tmp_path, 'alike-n', seed=4)
    fast = FeatureExtractor('alike-n', path, 'cpu', runtime='onednn')
    ref = FeatureExtractor('alike-n', path, 'cpu', runtime='torch')
    rng = np.random.default_rng(5)
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(np.repeat(img, 4, 0), 4, 1))
    a, b = fast.extract(img, 300), ref.extract(img, 300)
    d, idx = (a.keypoints[:, None] - b.keypoints[None]).norm(dim=-1).min(dim=1)
    assert abs(len(a.keypoints) - len(b.keypoints)) <= 3 and (d < 1.0).float().mean() > 0.97
    near = d < 0.05
    assert near.float().mean() > 0.5
    cos = (a.keypoint_desc[near] * b.keypoint_desc[idx[near]]).sum(-1)
    assert cos.min() > 0.99
    cos = (a.grid_desc * b.grid_desc).sum(-1)
    assert cos.min() > 0.99 and cos.mean() > 0.999

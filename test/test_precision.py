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

"""Head training arithmetic: bf16 autocast where native, float32 weights and optimiser."""

import threading

import numpy as np
import pytest
import torch

from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.precision import (
    autocast,
    cpu_has_native_bf16,
    no_tf32,
    resolve_precision,
)
from scene_reloc.region_head import RegionClassifier, RegionHeadConfig
from scene_reloc.relocalizer import Relocalizer
from scene_reloc.site import SiteLocalizer
from scene_reloc_training.memorize.region_training import train_region_head


def test_precision_choices():
    assert resolve_precision('fp32', 'cpu') == 'fp32'
    assert resolve_precision('bf16', 'cpu') == 'bf16'
    assert resolve_precision('auto', 'cpu') == ('bf16' if cpu_has_native_bf16() else 'fp32')
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve_precision('fp8', 'cpu')


def test_bf16_autocasts_the_products_and_keeps_float32_weights():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with autocast('cpu', 'bf16'):
        assert layer(x).dtype == torch.bfloat16
    with autocast('cpu', 'fp32'):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_region_head_fits_in_either_precision(precision):
    """A separable toy buffer is learned to near-perfect accuracy either way."""
    g = torch.Generator().manual_seed(0)
    cfg = RegionHeadConfig(in_dim=16, hidden=32, k1=4, k2=4)
    centres = torch.nn.functional.normalize(torch.randn(16, 16, generator=g), dim=1)
    leaf = torch.randint(16, (4000,), generator=g)
    desc = torch.nn.functional.normalize(centres[leaf] + 0.05 * torch.randn(4000, 16,
                                                                           generator=g), dim=1)
    buffer = {'desc': desc.half(), 'leaf': leaf, 'l1': leaf // 4}
    model, stats = train_region_head(buffer, cfg, 150, 256, 1e-2, 1e-4, 0, 'cpu',
                                     progress=False, precision=precision)
    assert isinstance(model, RegionClassifier) and stats['precision'] == precision
    assert next(model.parameters()).dtype == torch.float32
    assert stats['train_leaf_accuracy'] > 0.95


def test_query_head_in_bf16_localizes_as_well(small_scene, small_map):
    """Only the head's products change precision: as many poses, as accurate (1 cm)."""
    from scene_reloc.geometry import pose_error
    from scene_reloc.posed_frames import PosedFrameFolder
    from scene_reloc.relocalizer import LocalizerConfig, Relocalizer
    root, _, query = small_scene
    reloc = Relocalizer.from_file(small_map[0], device='cpu')
    frames = PosedFrameFolder(root).frames(query[:8])
    errors = {}
    for precision in ('fp32', 'bf16'):
        reloc.config.head_precision = precision
        res = [reloc.localize(f.load_color(), f.K) for f in frames]
        errors[precision] = [pose_error(r.world_from_cam, f.load_pose())[0]
                             for r, f in zip(res, frames) if r.success]
    assert len(errors['fp32']) >= 6
    assert abs(len(errors['bf16']) - len(errors['fp32'])) <= 1
    assert np.median(errors['bf16']) < np.median(errors['fp32']) + 0.01
    with pytest.raises(ValueError, match='head_precision'):
        LocalizerConfig.from_dict({'head_precision': 'fp8'})


def _tf32_flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture(autouse=True)
def _no_tf32_switch_in_the_environment(monkeypatch):
    monkeypatch.delenv('SCENE_RELOC_ALLOW_TF32', raising=False)


def test_no_tf32_speaks_the_newer_pytorch_api_when_the_process_uses_it():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        matmul.fp32_precision = conv.fp32_precision = 'tf32'   # the legacy flags now raise
        with pytest.raises(RuntimeError):
            _tf32_flags()
        with no_tf32():
            assert (matmul.fp32_precision, conv.fp32_precision) == ('ieee', 'ieee')
        assert (matmul.fp32_precision, conv.fp32_precision) == ('tf32', 'tf32')
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
    _tf32_flags()   # the legacy flags read again once the new API is back where it was


def test_no_tf32_in_overlapping_threads_restores_only_when_the_last_one_leaves():
    saved = _tf32_flags()
    a_inside, b_inside, a_left = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with no_tf32():
            a_inside.set()
            b_inside.wait(10)
        a_left.set()

    def b():
        a_inside.wait(10)
        with no_tf32():
            b_inside.set()
            a_left.wait(10)
            seen['b after a left'] = _tf32_flags()

    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert seen['b after a left'] == (False, False)
        assert _tf32_flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize('before', [(True, True), (True, False), (False, False)])
def test_no_tf32_turns_both_flags_off_and_restores_them(before):
    saved = _tf32_flags()
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
        with no_tf32():
            assert _tf32_flags() == (False, False)
            with no_tf32():
                pass
            assert _tf32_flags() == (False, False)
        assert _tf32_flags() == before
        with pytest.raises(RuntimeError), no_tf32():
            raise RuntimeError('inside')
        assert _tf32_flags() == before
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_the_environment_can_leave_tf32_to_pytorch(monkeypatch):
    saved = _tf32_flags()
    monkeypatch.setenv('SCENE_RELOC_ALLOW_TF32', '1')
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with no_tf32():
            assert _tf32_flags() == (True, True)
        monkeypatch.setenv('SCENE_RELOC_ALLOW_TF32', '0')
        with no_tf32():
            assert _tf32_flags() == (False, False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_a_query_runs_its_backbone_and_scene_model_without_tf32(small_scene, small_map,
                                                                 monkeypatch):
    root, _, query = small_scene
    reloc = Relocalizer.from_file(small_map[0], device='cpu')
    seen = []

    def recording(fn):
        def wrapped(*args, **kwargs):
            seen.append((fn.__name__, _tf32_flags()))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(reloc.extractor, 'extract', recording(reloc.extractor.extract))
    monkeypatch.setattr(reloc.scene_model, 'correspondences',
                        recording(reloc.scene_model.correspondences))
    frame = PosedFrameFolder(root).frames(query[:1])[0]
    saved = _tf32_flags()
    try:   # PyTorch's default on a GPU: TF32 convolutions (the flags are not plain attributes)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert reloc.localize(frame.load_color(), frame.K).success
        assert _tf32_flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [('extract', (False, False)), ('correspondences', (False, False))]


def test_memorize_runs_without_tf32(monkeypatch):
    from scene_reloc_training.memorize import memorize_scene
    seen = []
    monkeypatch.setattr(memorize_scene, '_memorize',
                        lambda *args: seen.append(_tf32_flags()) or {'train_seconds': 0.0})
    saved = _tf32_flags()
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert memorize_scene.memorize([], 'unused.map') == {'train_seconds': 0.0}
        assert _tf32_flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [(False, False)]


def test_a_site_query_runs_without_tf32(site, monkeypatch):
    out, _, roots = site
    loc = SiteLocalizer.from_file(out, device='cpu')
    seen = []
    extract = loc.extractor.extract
    monkeypatch.setattr(loc.extractor, 'extract',
                        lambda *a, **k: seen.append(_tf32_flags()) or extract(*a, **k))
    root, query = roots['lab']
    frame = PosedFrameFolder(root).frames(query[:1])[0]
    saved = _tf32_flags()
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        loc.localize(frame.load_color(), frame.K)
        loc.localize(frame.load_color(), frame.K)
        assert _tf32_flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [(False, False)] * 2

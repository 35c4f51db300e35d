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

"""Retrieval core: aggregators, whitening, the faiss index, overlap voting, the model file."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scene_reloc.artifact import ArtifactError
from scene_reloc.retrieval.aggregation import GeM, MeanPool, NetVLAD, Whitening
from scene_reloc.retrieval.index import GlobalIndex
from scene_reloc.retrieval.model import RetrievalConfig, RetrievalModel
from scene_reloc.retrieval.voting import overlap_votes


def clustered(k=4, per=200, dim=16, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=-1)
    x = centres.repeat_interleave(per, 0) + spread * torch.randn(k * per, dim, generator=g)
    return F.normalize(x, dim=-1), centres


def test_netvlad_init_assigns_descriptors_to_their_cluster():
    x, centres = clustered()
    vlad = NetVLAD(4, 16)
    vlad.init_from_descriptors(x)
    a = F.softmax(vlad.assign(x), dim=-1)
    assert (a.max(1).values > 0.9).float().mean() > 0.95     # near one-hot (alpha from the gap)
    # each learned centroid is one of the true centres
    assert (vlad.centroids @ centres.T).max(1).values.min() > 0.98
    out = vlad(x[None])
    assert out.shape == (1, 64) and torch.isclose(out.norm(), torch.tensor(1.0))
    # One descriptor: its block is the intra-normalised residual to its nearest centroid.
    one = vlad(x[:1][None]).reshape(4, 16)
    k = int(a[0].argmax())
    res = F.normalize(x[0] - vlad.centroids[k], dim=0)
    assert torch.allclose(F.normalize(one[k], dim=0), res, atol=0.05)


def test_whitening_decorrelates_and_reduces():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 8, generator=g) @ torch.diag(torch.tensor([5., 3, 2, 1, .5, .2, .1, .05]))
    w = Whitening(8, 4)
    w.fit(x)
    z = (x - w.mean) @ w.proj.T
    assert torch.allclose(torch.cov(z.T), torch.eye(4), atol=0.05)
    assert torch.allclose(w(x).norm(dim=1), torch.ones(500))
    # Long vectors, few images: the Gram-matrix path gives the same axes' variances.
    xs = torch.randn(20, 300, generator=g)
    ws = Whitening(300, 10)
    ws.fit(xs)
    zs = (xs - ws.mean) @ ws.proj.T
    assert torch.allclose(zs.var(0, unbiased=False), torch.ones(10), atol=1e-3)
    with pytest.raises(ValueError, match='fewer than'):
        Whitening(300, 30).fit(xs)             # 20 images span 19 dimensions


def test_gem_between_mean_and_max():
    x = torch.rand(1, 50, 8) + 0.01
    assert torch.allclose(GeM(1.0)(x), F.normalize(x.mean(1), dim=-1), atol=1e-5)
    assert torch.allclose(MeanPool()(x), F.normalize(x.mean(1), dim=-1))
    hi = GeM(8.0)(x)
    assert F.cosine_similarity(hi, F.normalize(x.max(1).values, dim=-1)).item() > \
        F.cosine_similarity(GeM(1.0)(x), F.normalize(x.max(1).values, dim=-1)).item()


@pytest.mark.parametrize('exact_limit', [10_000, 100])
def test_global_index_matches_brute_force(exact_limit):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(2000, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    index = GlobalIndex(db, exact_limit=exact_limit)
    assert index.exact == (exact_limit >= 2000)
    sims, ids = index.search(q, 5)
    truth = np.argsort(-(q @ db.T), axis=1)[:, :5]
    hit = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, truth)])
    assert hit == 1.0 if index.exact else hit > 0.8
    assert np.all(ids[:, 0] == np.arange(50))
    empty = GlobalIndex(np.zeros((0, 32), np.float32))
    assert empty.search(q, 5)[1].shape == (50, 0)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 31)), 3)
    with pytest.raises(ValueError):
        GlobalIndex(np.full((3, 4), np.nan))


def test_overlap_votes_rank_by_shared_patches_and_discount_common_ones():
    rng = np.random.default_rng(2)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)   # noqa: E731
    q = unit(rng.normal(size=(40, 16)))
    common = q[:4]                                # seen in every frame (a floor, say)
    a = np.concatenate([q[4:24], common, unit(rng.normal(size=(10, 16)))])    # 20 shared
    b = np.concatenate([q[24:29], common, unit(rng.normal(size=(25, 16)))])   # 5 shared
    c = np.concatenate([common, unit(rng.normal(size=(30, 16)))])             # only the floor
    scores, radius = overlap_votes(q, [a, b, c], radius=0.01)
    assert scores[0] > scores[1] > 0 and radius == 0.01
    assert scores[2] == 0          # the floor is in every frame: its IDF is 0
    # One frame only: no IDF, the unweighted vote (VOP's fallback) still counts the matches.
    single, _ = overlap_votes(q, [a], radius=0.01)
    assert np.isclose(single[0], 24, atol=1e-3)
    # Real patch embeddings share a common direction: the median-derived radius then sits
    # between unrelated (~median) and matching (1) patches.
    shift = lambda x: unit(x + 0.8 * unit(np.ones(16)))   # noqa: E731
    auto, r = overlap_votes(shift(q), [shift(a), shift(b), shift(c)])
    assert 0.2 < r < 0.8 and auto[0] > auto[1] > auto[2]
    assert overlap_votes(q, [])[0].shape == (0,)


def test_retrieval_model_file_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = RetrievalModel(RetrievalConfig(clusters=4, local_dim=16, dim=8, patch_dim=8,
                                           positional=True))
    x, _ = clustered(dim=16)
    model.aggregator.init_from_descriptors(x)
    grids = torch.randn(12, 6, 8, 16)
    model.whitening.fit(model.aggregate(grids))
    path = str(tmp_path / 'r.safetensors')
    model.save(path, 'handcrafted', None, {'how': 'test'})
    loaded, manifest = RetrievalModel.load(path)
    assert manifest['config']['positional'] and manifest['info'] == {'how': 'test'}
    g0, p0 = model.eval().describe(grids[0])
    g1, p1 = loaded.describe(grids[0])
    assert np.allclose(g0, g1) and np.allclose(p0, p1) and g0.shape == (8,)
    assert p0.shape == (2 * 2, 8)                 # 6x8 grid, 4x4 patches, ceil -> 2x2
    data = bytearray(open(path, 'rb').read())
    data[-5] ^= 0xFF
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match='checksum|readable'):
        RetrievalModel.load(str(bad))
    (tmp_path / 'short.safetensors').write_bytes(bytes(data[:100]))
    with pytest.raises(ArtifactError):
        RetrievalModel.load(str(tmp_path / 'short.safetensors'))
    with pytest.raises(ValueError, match='aggregator'):
        RetrievalConfig.from_dict({'aggregator': 'vlad2'})


def test_overlap_is_one_for_the_same_view_and_respects_occlusion():
    from scene_reloc.geometry import look_at
    from scene_reloc.retrieval.overlap import (
        frame_overlap,
        mutual_patch_matches,
        patch_correspondences,
    )
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    wall = np.full((96, 128), 3.0)                 # fronto-parallel wall 3 m away
    A = look_at([0, 0, 0], [0, 3, 0])
    assert frame_overlap(wall, K, A, wall, K, A) == 1.0
    # Turned by about half the field of view: about half of A is seen in B.
    B = look_at([0, 0, 0], [3 * np.tan(np.radians(16)), 3, 0])
    wall_b = 3.0 / np.cos(np.radians(16)) * np.ones((96, 128))   # not exact, tolerance 5 %
    half = frame_overlap(wall, K, A, wall_b, K, B, stride=2, rel_tol=0.2)
    assert 0.4 < half < 0.8
    # Looking away: nothing. An occluder in B (depth 1 m everywhere): nothing either.
    C = look_at([0, 0, 0], [0, -3, 0])
    assert frame_overlap(wall, K, A, wall, K, C) == 0.0
    assert frame_overlap(wall, K, A, np.full((96, 128), 1.0), K, A) == 0.0
    ab = patch_correspondences(wall, K, A, wall, K, A, 32)
    assert len(ab) == 12 and np.all(ab[:, 0] == ab[:, 1])       # 4 x 3 patches onto themselves
    assert len(mutual_patch_matches(ab, ab[:, ::-1])) == 12

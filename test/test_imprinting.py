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

"""The imprinted level-1 start: the nearest-region-mean classifier, before any training step."""

import torch
import torch.nn.functional as F

from scene_reloc.region_head import RegionClassifier, RegionHeadConfig
from scene_reloc_training.memorize.imprinting import imprint_level1
from scene_reloc_training.memorize.region_training import train_region_head


def _clustered_buffer(k1=8, k2=4, per_leaf=40, dim=32, seed=0, empty=()):
    """
    Return descriptors in k1 clusters (one per region), leaves as sub-clusters.

    Regions in ``empty`` have no sample.
    """
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k1, dim, generator=g), dim=1)
    desc, l1, leaf = [], [], []
    for r in range(k1):
        if r in empty:
            continue
        for j in range(k2):
            sub = centres[r] + 0.15 * F.normalize(torch.randn(dim, generator=g), dim=0)
            x = sub + 0.08 * torch.randn(per_leaf, dim, generator=g)
            desc.append(F.normalize(x, dim=1))
            l1 += [r] * per_leaf
            leaf += [r * k2 + j] * per_leaf
    return {'desc': torch.cat(desc), 'l1': torch.tensor(l1), 'leaf': torch.tensor(leaf)}


def _region_accuracy(model, buffer):
    with torch.no_grad():
        logits, _ = model(buffer['desc'], buffer['l1'])
    return float((logits.argmax(1) == buffer['l1']).float().mean())


def test_imprinted_rows_classify_regions_before_training_where_zero_rows_cannot():
    cfg = RegionHeadConfig(in_dim=32, hidden=64, k1=8, k2=4)
    buffer = _clustered_buffer()
    torch.manual_seed(0)
    model = RegionClassifier(cfg)
    torch.nn.init.zeros_(model.cls1.weight)
    torch.nn.init.zeros_(model.cls1.bias)          # the meta start's "zero trick"
    assert _region_accuracy(model, buffer) < 0.2   # chance is 1/8
    info = imprint_level1(model, buffer, 'cpu')
    assert info['imprinted_regions'] == 8 and info['imprint_sigma2'] > 0
    assert _region_accuracy(model, buffer) > 0.95  # a random trunk keeps the clusters apart
    # The rule is the nearest class mean of the trunk's features, written as a linear layer.
    with torch.no_grad():
        z = model.trunk(buffer['desc'])
        means = torch.stack([z[buffer['l1'] == r].mean(0) for r in range(8)])
        nearest = torch.cdist(z, means).argmin(1)
        logits, _ = model(buffer['desc'], buffer['l1'])
    assert torch.equal(logits.argmax(1), nearest)


def test_a_region_without_samples_is_never_predicted():
    cfg = RegionHeadConfig(in_dim=32, hidden=64, k1=8, k2=4)
    buffer = _clustered_buffer(empty=(3,))
    torch.manual_seed(1)
    model = RegionClassifier(cfg)
    assert imprint_level1(model, buffer, 'cpu')['imprinted_regions'] == 7
    probe = F.normalize(torch.randn(500, 32, generator=torch.Generator().manual_seed(2)), dim=1)
    with torch.no_grad():
        logits, _ = model(probe, torch.zeros(500, dtype=torch.long))
    assert not torch.any(logits.argmax(1) == 3)


def test_training_from_the_imprinted_start_reports_it_and_learns_faster():
    cfg = RegionHeadConfig(in_dim=32, hidden=64, k1=8, k2=4)
    buffer = _clustered_buffer(seed=3)
    args = (buffer, cfg, 5, 64, 3e-3, 0.0, 0, 'cpu')
    plain, stats0 = train_region_head(*args, progress=False)
    imprinted, stats1 = train_region_head(*args, progress=False, imprint=True)
    assert 'imprinted_regions' not in stats0 and stats1['imprinted_regions'] == 8
    assert stats1['train_region_accuracy'] > 0.95 > stats0['train_region_accuracy'] + 0.2

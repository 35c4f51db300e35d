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
A label-free start for the level-1 classifier: each region's row imprinted from its mean feature.

Imprinting (Qi, Brown and Lowe, CVPR 2018) sets a new class's classifier weights from the mean
embedding of its examples instead of learning them. Here the embedding is the head's trunk
output ``z`` (whatever start the trunk has: random or meta-learned) and the rule is the
Gaussian nearest-mean classifier with one shared isotropic variance,
``logit_r = (m_r . z - |m_r|^2 / 2) / sigma^2``, linear in ``z`` (the ``|z|^2 / 2`` term is the
same for every region and drops out of the softmax). It costs one pass of the trunk over a
sample of the buffer and no gradient step; training then starts from a classifier that already
separates the regions as well as the trunk's features allow.

Only level 1 is imprinted: the level-2 classifier's output rows are shared by every region
(sub-region j of region a and of region b are different places), so no single mean fits them.
"""

import torch


@torch.no_grad()
def imprint_level1(model, buffer, device, max_samples=50_000):
    """
    Set ``model.cls1`` to the nearest-region-mean classifier of its trunk's features.

    :param model: a :class:`~scene_reloc.region_head.RegionClassifier` (changed in place).
    :param buffer: the feature buffer (``desc`` (N, D), ``l1`` (N,) region labels).
    :return: dict: regions imprinted and the shared variance sigma^2.
    """
    n = buffer['desc'].shape[0]
    idx = torch.linspace(0, n - 1, min(n, max_samples)).long()
    cls1 = model.cls1
    dtype = cls1.weight.dtype
    z = model.trunk(buffer['desc'][idx].to(device=device, dtype=dtype))
    y = buffer['l1'][idx].to(device)
    k1 = cls1.weight.shape[0]
    counts = torch.bincount(y, minlength=k1).to(dtype)
    means = torch.zeros((k1, z.shape[1]), dtype=dtype, device=z.device).index_add_(0, y, z)
    means /= counts.clamp(min=1)[:, None]
    sigma2 = float(((z - means[y]) ** 2).sum(1).mean()) / z.shape[1]
    scale = 1.0 / max(sigma2, 1e-12)
    weight = means * scale
    bias = -0.5 * scale * (means ** 2).sum(1)
    seen = counts > 0
    # A region with no sample in the buffer must never win: below every seen region's bias.
    if bool(seen.any()) and not bool(seen.all()):
        bias[~seen] = bias[seen].min() - 30.0
        weight[~seen] = 0
    cls1.weight.copy_(weight)
    cls1.bias.copy_(bias)
    return {'imprinted_regions': int(seen.sum()), 'imprint_sigma2': round(sigma2, 6)}

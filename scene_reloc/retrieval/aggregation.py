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
Global descriptors: one vector per image from its (H, W, D) grid of local descriptors.

Every aggregator takes local descriptors shaped (B, N, D) (N grid cells, L2-normalised) and
returns (B, D_out) L2-normalised vectors, so that the inner product is the cosine similarity.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F


class MeanPool(nn.Module):
    """The mean of the local descriptors (the simplest baseline)."""

    def forward(self, x_BND):
        return F.normalize(x_BND.mean(1), dim=-1)


class GeM(nn.Module):
    """
    Generalised-mean pooling (Radenovic et al.): (mean x^p)^(1/p) per channel, p learned.

    Descriptors may be negative, so the mean runs over |x|^p with the sign of the mean kept.
    """

    def __init__(self, p=3.0):
        super().__init__()
        # Shape (1,), not (): safetensors stores a 0-d tensor as (1,).
        self.p = nn.Parameter(torch.tensor([float(p)]))

    def forward(self, x_BND):
        p = self.p.clamp(1.0, 8.0)
        m = (x_BND.abs().clamp(min=1e-6) ** p * x_BND.sign()).mean(1)
        return F.normalize(m.sign() * m.abs().clamp(min=1e-12) ** (1.0 / p), dim=-1)


class NetVLAD(nn.Module):
    """
    NetVLAD (Arandjelovic et al.): soft-assigned residuals to K learned centroids.

    The soft assignment is a linear layer (softmax over k), initialised from k-means. The
    residual sums
    are intra-normalised per cluster, flattened and L2-normalised (K * D values).
    """

    def __init__(self, clusters, dim):
        super().__init__()
        self.clusters, self.dim = int(clusters), int(dim)
        self.centroids = nn.Parameter(torch.zeros(self.clusters, self.dim))
        self.assign = nn.Linear(self.dim, self.clusters)

    @torch.no_grad()
    def init_from_descriptors(self, desc_ND, seed=0):
        """
        Set the centroids by k-means on local descriptors and alpha from their spread.

        As NetVLAD's reference initialisation (OpenIBL): the assignment is alpha c_k . x with
        unit c_k (the |c_k|^2 term is the same for every k), alpha making a typical
        descriptor's assignment 100 times stronger to its nearest centroid than to the second;
        residuals are taken to the raw k-means centroids.
        """
        from scene_reloc.partition import kmeans
        desc = F.normalize(torch.as_tensor(desc_ND, dtype=torch.float32), dim=-1)
        centres, _ = kmeans(desc, self.clusters, iters=20, seed=seed)
        centres = torch.as_tensor(centres, dtype=torch.float32)
        if centres.shape[0] < self.clusters:
            raise ValueError(f'{desc.shape[0]} descriptors give only {centres.shape[0]} distinct '
                             f'centroids; NetVLAD needs {self.clusters}')
        unit = F.normalize(centres, dim=-1)
        dots = (desc @ unit.T).topk(2, dim=1).values
        gap = float((dots[:, 0] - dots[:, 1]).mean())
        alpha = -math.log(0.01) / max(gap, 1e-6)
        self.centroids.copy_(centres)
        self.assign.weight.copy_(alpha * unit)
        self.assign.bias.zero_()

    def forward(self, x_BND):
        a = F.softmax(self.assign(x_BND), dim=-1)                     # (B, N, K)
        # sum_n a_nk (x_n - c_k) = a^T x - (sum_n a_nk) c_k
        v = torch.einsum('bnk,bnd->bkd', a, x_BND) - a.sum(1)[..., None] * self.centroids
        v = F.normalize(v, dim=-1)                                      # intra-normalisation
        return F.normalize(v.flatten(1), dim=-1)


class Whitening(nn.Module):
    """
    PCA whitening to a smaller dimension, then L2 normalisation.

    Learned from descriptors (:meth:`fit`): subtract their mean, project on the top principal
    axes and scale each by 1 / sqrt(its variance + eps).
    """

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.register_buffer('mean', torch.zeros(int(dim_in)))
        self.register_buffer('proj', torch.eye(int(dim_out), int(dim_in)))

    @torch.no_grad()
    def fit(self, desc_ND, eps=1e-4):
        x = torch.as_tensor(desc_ND, dtype=torch.float64)
        k = self.proj.shape[0]
        if x.shape[0] < 2:
            raise ValueError('whitening needs at least 2 descriptors')
        mean = x.mean(0)
        xc = x - mean
        # The top-k axes from the smaller of the two Gram matrices (few images, long vectors).
        if x.shape[0] < x.shape[1]:
            evals, evecs = torch.linalg.eigh(xc @ xc.T / x.shape[0])
            evecs = xc.T @ evecs / torch.sqrt(evals.clamp(min=1e-12) * x.shape[0])
        else:
            evals, evecs = torch.linalg.eigh(xc.T @ xc / x.shape[0])
        order = torch.argsort(evals, descending=True)[:k]
        evals, evecs = evals[order], evecs[:, order]
        if evals.numel() < k or float(evals[-1]) <= 1e-9 * float(evals[0]):
            raise ValueError(f'{x.shape[0]} descriptors span fewer than {k} dimensions; '
                             'whiten to fewer or give more images')
        self.mean.copy_(mean.float())
        self.proj.copy_((evecs / torch.sqrt(evals + eps)).T.float())

    def forward(self, x_BD):
        return F.normalize((x_BD - self.mean) @ self.proj.T, dim=-1)

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
Hierarchical partition of scene coordinates (the SRC method's label space).

A two-level k-means tree: level 1 splits the memorized scene coordinates into ``k1`` regions,
level 2 splits each region into ``k2`` sub-regions. A leaf is ``l1 * k2 + l2``. Points are
assigned down the tree (nearest level-1 centre, then nearest level-2 centre inside that region),
so a label is always consistent with its parent.
"""

import numpy as np
import torch


def kmeans(points_N3, k, iters=25, seed=0):
    """
    Lloyd's k-means with k-means++ seeding.

    :return: (centres (k', 3), assignment (N,)), k' = min(k, number of distinct points).
    """
    # float32: scene coordinates in metres need no more, and the distances cost half as much.
    pts = torch.as_tensor(np.asarray(points_N3), dtype=torch.float32)
    n = pts.shape[0]
    k = int(min(k, n))
    gen = torch.Generator().manual_seed(seed)
    centres = pts[torch.randint(n, (1,), generator=gen)]
    d2 = ((pts - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if float(d2.sum()) <= 0:
            break
        idx = torch.multinomial(d2 / d2.sum(), 1, generator=gen)
        centres = torch.cat([centres, pts[idx]])
        d2 = torch.minimum(d2, ((pts - pts[idx]) ** 2).sum(1))
    for _ in range(iters):
        assign = torch.cdist(pts, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, pts)
        counts = torch.bincount(assign, minlength=centres.shape[0]).to(pts.dtype)
        moved = sums / counts.clamp(min=1)[:, None]
        new = torch.where(counts[:, None] > 0, moved, centres)
        if torch.allclose(new, centres):
            break
        centres = new
    assign = torch.cdist(pts, centres).argmin(1)
    return centres.numpy(), assign.numpy()


class HierarchicalPartition:
    """
    Two-level k-means tree over 3D points.

    :ivar centres_l1: (k1, 3) region centres.
    :ivar leaf_centres: (k1 * k2, 3) sub-region centres; NaN for leaves that do not exist
        (a region with fewer points than k2).
    """

    def __init__(self, centres_l1, leaf_centres, k2):
        self.centres_l1 = np.asarray(centres_l1, dtype=np.float32)
        self.leaf_centres = np.asarray(leaf_centres, dtype=np.float32)
        self.k1 = self.centres_l1.shape[0]
        self.k2 = int(k2)
        if self.leaf_centres.shape != (self.k1 * self.k2, 3):
            raise ValueError(f'leaf_centres must be ({self.k1 * self.k2}, 3), '
                             f'got {self.leaf_centres.shape}')

    @property
    def num_leaves(self):
        return self.k1 * self.k2

    @classmethod
    def build(cls, points_N3, k1=64, k2=64, seed=0, max_points=100_000):
        """Cluster scene coordinates into a k1 x k2 tree (subsampled to ``max_points``)."""
        pts = np.asarray(points_N3, dtype=np.float64)
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if len(pts) < k1:
            raise ValueError(f'{len(pts)} valid scene points cannot be split into {k1} regions; '
                             'memorize more frames or check the depth images')
        rng = np.random.default_rng(seed)
        if len(pts) > max_points:
            pts = pts[rng.choice(len(pts), max_points, replace=False)]
        c1, a1 = kmeans(pts, k1, seed=seed)
        k1 = c1.shape[0]
        leaves = np.full((k1, k2, 3), np.nan)
        for r in range(k1):
            sub = pts[a1 == r]
            if len(sub) == 0:
                continue
            c2, _ = kmeans(sub, k2, iters=15, seed=seed + 1 + r)
            leaves[r, :len(c2)] = c2
        return cls(c1, leaves.reshape(-1, 3), k2)

    def assign(self, points_N3):
        """
        Leaf label of every point, going down the tree; -1 for non-finite points.

        :return: (leaf (N,), l1 (N,)) int64.
        """
        pts = torch.as_tensor(np.asarray(points_N3, dtype=np.float32))
        ok = torch.isfinite(pts).all(1)
        leaf = torch.full((pts.shape[0],), -1, dtype=torch.int64)
        l1 = torch.full((pts.shape[0],), -1, dtype=torch.int64)
        if ok.any():
            p = pts[ok]
            r = torch.cdist(p, torch.from_numpy(self.centres_l1)).argmin(1)
            leaves = torch.nan_to_num(torch.from_numpy(self.leaf_centres),
                                      nan=float('inf')).reshape(self.k1, self.k2, 3)
            sub = torch.empty_like(r)
            # Region by region: no (N, k2, 3) gather, which costs gigabytes on a feature buffer.
            order = torch.argsort(r, stable=True)
            bounds = torch.searchsorted(r[order], torch.arange(self.k1 + 1)).tolist()
            for region in range(self.k1):
                rows = order[bounds[region]:bounds[region + 1]]
                if len(rows):
                    d = ((p[rows, None] - leaves[region][None]) ** 2).sum(-1)
                    sub[rows] = torch.nan_to_num(d, nan=float('inf')).argmin(1)
            leaf[ok] = r * self.k2 + sub
            l1[ok] = r
        return leaf.numpy(), l1.numpy()

    def tensors(self):
        """Arrays to store in a scene map."""
        return {'partition.centres_l1': self.centres_l1,
                'partition.leaf_centres': self.leaf_centres}

    @classmethod
    def from_tensors(cls, tensors, k2):
        return cls(tensors['partition.centres_l1'], tensors['partition.leaf_centres'], k2)

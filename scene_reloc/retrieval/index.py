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
The global-descriptor index: nearest database frames by inner product (cosine similarity).

faiss does the search: an exact flat inner-product index up to ``exact_limit`` frames (10^5 by
default), an inverted file beyond (IVF: k-means cells, ``nprobe`` of them searched). IVF is
approximate (its top-1 agreed with the exact search for 99.5 % of queries among 10^6 random
frames at nprobe 256, 2.6 ms) but builds in 33 s, where an HNSW graph of 10^6 frames takes
many minutes on 2 cores (bench/bench_retrieval.py --scaling).
The index is rebuilt from the stored descriptors when a site loads, so no faiss file is ever
trusted from disk.
"""

import numpy as np


class GlobalIndex:
    """Nearest neighbours of L2-normalised descriptors by inner product."""

    def __init__(self, descriptors_ND, exact_limit=100_000, nprobe=256, seed=0):
        import faiss
        d = np.ascontiguousarray(descriptors_ND, dtype=np.float32)
        if d.ndim != 2 or not np.all(np.isfinite(d)):
            raise ValueError(f'descriptors must be a finite (N, D) array, got shape {d.shape}')
        self.size, self.dim = d.shape
        if self.size <= exact_limit:
            self.index = faiss.IndexFlatIP(self.dim)
        else:
            # About 4 sqrt(N) cells, each trained from >= 39 points as faiss recommends.
            nlist = int(max(1, min(4 * np.sqrt(self.size), self.size // 39)))
            quantizer = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist,
                                            faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            train = d[rng.choice(self.size, min(self.size, 64 * nlist), replace=False)]
            self.index.train(train)
            self.index.nprobe = min(nprobe, nlist)
            self._quantizer = quantizer        # the IVF index does not own it
        if self.size:
            self.index.add(d)

    @property
    def exact(self):
        return type(self.index).__name__ == 'IndexFlatIP'

    def search(self, queries_QD, k):
        """
        Return (similarities (Q, k'), frame indices (Q, k')), best first; k' = min(k, size).

        An empty index gives (Q, 0) arrays.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries_QD), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f'query descriptors have {q.shape[1]} values, the index {self.dim}')
        k = int(min(k, self.size))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        sims, ids = self.index.search(q, k)
        return sims, ids

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
Image retrieval: which memorized frames (and so which map) a query image shows.

- ``aggregation``: global descriptors from the backbone's dense grid descriptors: mean pooling,
  GeM, and NetVLAD (soft-assigned residuals to K clusters, intra- and L2-normalised), each
  optionally PCA-whitened to a small dimension;
- ``model``: a retrieval model file (aggregator + patch projection, safetensors + manifest);
- ``index``: the global-descriptor index over many frames (faiss: flat inner product, HNSW
  for very large databases);
- ``voting``: VOP's patch-overlap voting that re-ranks a shortlist.

Retrieval runs at query time and lives in the core; its training lives in ``training/learn``.
"""

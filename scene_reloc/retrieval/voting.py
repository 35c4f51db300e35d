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
VOP's overlap voting (Wei et al., "Breaking the Frame", WACV 2025), on a shortlist.

Each query patch looks for database patches within a similarity radius; every shortlisted frame
that holds such a patch gets the query patch's vote, weighted by TF-IDF over the shortlist: a
patch that matches in every frame (floor, wall) says little, one that matches in one frame says
much. A frame's score is the sum of its votes: an estimate of how much of the query it
overlaps, robust to frames that merely look alike globally.
"""

import numpy as np


def overlap_votes(query_PE, frames, radius=None):
    """
    Score shortlisted frames by patch-overlap voting.

    :param query_PE: (P, E) L2-normalised patch embeddings of the query.
    :param frames: list of (P_j, E) patch embeddings of the shortlisted database frames.
    :param radius: lowest cosine similarity of a match; None derives it per query as the
        median of the query patches' best similarities over the shortlist (so about half of
        the query patches vote).
    :return: (scores (len(frames),) float64, radius used).
    """
    n = len(frames)
    if n == 0 or len(query_PE) == 0:
        return np.zeros(n), float('nan') if radius is None else radius
    q = np.asarray(query_PE, dtype=np.float32)
    best = np.stack([(q @ np.asarray(f, dtype=np.float32).T).max(1) if len(f) else
                     np.full(len(q), -1.0, np.float32) for f in frames], axis=1)   # (P, n)
    if radius is None:
        radius = float(np.median(best.max(1)))
    hit = best >= radius                                                           # (P, n)
    df = hit.sum(1)                                                                # frames hit
    idf = np.where(df > 0, np.log((n + 1.0) / (df + 0.5)), 0.0)
    # TF: a query patch's vote is shared by the frames it hits (1 / df), IDF as above.
    tf = np.where(df > 0, 1.0 / np.maximum(df, 1), 0.0)
    return (hit * (tf * idf)[:, None]).sum(0), radius

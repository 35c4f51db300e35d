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

Each query patch q looks for database patches within a cosine radius r (cos > 1 - r) among the
N shortlisted frames. Its votes are weighted by TF-IDF over the shortlist, as VOP does:
w_q = (n_q / n_d) * log(N / m_q), with n_q its matched patches over the whole shortlist, n_d
the patches of one frame and m_q the frames it matched in (a patch that matches in every frame,
a floor or a wall, says little). Frame j scores sum_q w_q * sum_{p in j matched} cos(q, p): an
estimate of how much of the query it overlaps, robust to frames that only look alike globally.
"""

import numpy as np


def median_radius(query_PE, frames):
    """VOP's default radius: the median cosine similarity of query patches to shortlist ones."""
    sims = np.concatenate([(query_PE @ np.asarray(f, np.float32).T).ravel() for f in frames
                           if len(f)])
    return float(np.median(sims)) if len(sims) else 0.0


def overlap_votes(query_PE, frames, radius=None):
    """
    Score shortlisted frames by patch-overlap voting.

    :param query_PE: (P, E) L2-normalised patch embeddings of the query.
    :param frames: list of (P_j, E) L2-normalised patch embeddings of the shortlisted frames.
    :param radius: cosine distance of a match (cos > 1 - radius); None: :func:`median_radius`.
    :return: (scores (len(frames),) float64, radius used).
    """
    n = len(frames)
    if n == 0 or len(query_PE) == 0:
        return np.zeros(n), float('nan') if radius is None else radius
    q = np.asarray(query_PE, dtype=np.float32)
    sims = [q @ np.asarray(f, dtype=np.float32).T for f in frames]          # (P, P_j) each
    if radius is None:       # median_radius, from the similarities computed once
        flat = np.concatenate([x.ravel() for x in sims])
        radius = float(np.median(flat)) if len(flat) else 0.0
    thr = 1.0 - radius
    hits = [np.where(s > thr, s, 0.0) for s in sims]
    n_q = sum((h > 0).sum(1) for h in hits)                                # (P,)
    m_q = sum((h > 0).any(1) for h in hits)                                # (P,)
    n_d = np.mean([max(len(f), 1) for f in frames])
    with np.errstate(divide='ignore'):
        w = np.where(m_q > 0, n_q / n_d * np.log(n / np.maximum(m_q, 1)), 0.0)
    w = np.maximum(w, 0.0)
    scores = np.array([float(w @ h.sum(1)) for h in hits])
    if not scores.any():
        # Every match is in every frame (or the shortlist is one frame): IDF says nothing, so
        # fall back to the unweighted vote, as VOP's reference code does.
        scores = np.array([float(h.sum()) for h in hits])
    return scores, radius

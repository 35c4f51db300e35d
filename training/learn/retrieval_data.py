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
Retrieval training data: frozen backbone grids of many scenes and their geometric overlaps.

Every scene is a posed RGB-D folder; its frames are read once, their grid descriptors computed
once with the frozen backbone (the retrieval model trains on top of them), and the overlap of
every pair of its frames measured from depth and poses (:mod:`scene_reloc.retrieval.overlap`).
Frames of different scenes never overlap.
"""

from dataclasses import dataclass
import os

import cv2
import numpy as np
import torch
from tqdm import tqdm

from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
from scene_reloc.retrieval.overlap import overlap_matrix


@dataclass
class RetrievalData:
    """All frames of all scenes, in one flat list."""

    grids: list            # (Hc, Wc, D) float16 tensors, one per frame
    scene: np.ndarray      # (N,) scene index of each frame
    overlap: list          # per scene, (n_s, n_s) overlaps of its frames
    offset: np.ndarray     # (S,) index of each scene's first frame
    depths: list           # per frame, depth at half resolution (metres; 0 invalid)
    Ks: list               # per frame, K of that half-resolution depth
    poses: list            # per frame, world_from_cam
    names: list            # per frame, 'scene/stem'

    def __len__(self):
        return len(self.grids)

    def pair_overlap(self, i, j):
        """Overlap of frame i with frame j (0 across scenes)."""
        s = self.scene[i]
        if s != self.scene[j]:
            return 0.0
        return float(self.overlap[s][i - self.offset[s], j - self.offset[s]])


def scene_frame_stems(folder, root):
    """
    Memorize and query frames of a corpus scene, else every frame of the folder.

    An empty list is skipped: a real scene too small to spare queries (the 12-frame stairs
    sample) joins the corpus with every frame memorized and an empty ``query.txt``.
    """
    stems = []
    for name in ('memorize.txt', 'query.txt'):
        path = os.path.join(root, name)
        if os.path.exists(path) and _names_a_frame(path):
            stems += parse_frame_list(path, folder)
    return stems or folder.stems()


def _names_a_frame(path):
    with open(path) as f:
        return any(line.split('#', 1)[0].strip() for line in f)


def load_retrieval_data(roots, extractor, max_frames=40, seed=0, progress=True):
    """
    Read scenes for retrieval training or evaluation.

    :param max_frames: frames kept per scene (evenly spaced over its frame list).
    """
    grids, scene, overlaps, offsets, depths, Ks, poses, names = [], [], [], [], [], [], [], []
    for s, root in enumerate(tqdm(roots, desc='reading scenes', unit='scene',
                                  disable=not progress)):
        folder = PosedFrameFolder(root)
        stems = scene_frame_stems(folder, root)
        if len(stems) > max_frames:
            stems = [stems[i] for i in np.linspace(0, len(stems) - 1, max_frames).astype(int)]
        offsets.append(len(grids))
        sd, sK, sp = [], [], []
        for fr in folder.frames(stems):
            depth = fr.load_depth()
            if depth is None:
                raise ValueError(f'{root}: frame {fr.stem} has no depth; retrieval training '
                                 'measures overlap from depth')
            grids.append(extractor.extract_grid(fr.load_color()).grid_desc.half().cpu())
            half = cv2.resize(depth, (depth.shape[1] // 2, depth.shape[0] // 2),
                              interpolation=cv2.INTER_NEAREST)
            K = fr.K.copy()
            K[:2] *= 0.5
            K[:2, 2] -= 0.25      # pixel centres at integers: (u + 0.5) / 2 - 0.5
            sd.append(half)
            sK.append(K)
            sp.append(fr.load_pose())
            scene.append(s)
            names.append(f'{os.path.basename(os.path.normpath(root))}/{fr.stem}')
        overlaps.append(overlap_matrix(sd, sK, sp, stride=4))
        depths += sd
        Ks += sK
        poses += sp
    return RetrievalData(grids, np.array(scene), overlaps, np.array(offsets), depths, Ks, poses,
                         names)


def stack_grids(data, idx, device='cpu'):
    """(B, Hc, Wc, D) float32 grids of frames ``idx`` (all frames share one size per scene)."""
    return torch.stack([data.grids[i] for i in idx]).float().to(device)

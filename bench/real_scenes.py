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
The real scenes of ../shared/data as benchmark protocols: which frames are memorized, which query.

Every scene with depth holds out half its frames (or its dataset's own test split): kitchen
dev-20 (0:700:35 memorized, 15:700:10 queried), the SUN3D study room and the tabletop (even /
odd frames), the 7-Scenes stairs (TrainSplit / TestSplit). Places in no map: the EuRoC drone
camera (grey, distorted; made RGB) and the TUM office (RGB only).
"""

import glob
import os

import cv2
import numpy as np

from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder

MAPPED = {
    'kitchen': ('7scenes_redkitchen_dev', '0:700:35', '15:700:10'),
    'studyroom': ('sun3d_studyroom_f1', 'even', 'odd'),
    'tabletop': ('tabletop_rgbd', 'even', 'odd'),
    'stairs': ('7scenes_stairs_sample', 'train', 'test'),
}
# Memorize settings a scene needs: the tabletop's depth is speckled (34 % valid pixels, holes
# everywhere), which the default depth-edge mask reads as edges everywhere and removes whole.
MEMORIZE_OVERRIDES = {'tabletop': {'edge_margin': 0}}


def scene_frames(data_root, name):
    """(memorized frames, query frames) of a mapped real scene."""
    folder_name, mem, query = MAPPED[name]
    folder = PosedFrameFolder(os.path.join(data_root, folder_name))
    stems = folder.stems()

    def pick(spec):
        if spec in ('even', 'odd'):
            return stems[0::2] if spec == 'even' else stems[1::2]
        return parse_frame_list(spec, folder)
    return folder.frames(pick(mem)), folder.frames(pick(query))


class OutOfMapImage:
    """An image from a place in no map (no pose): colour and K, like a posed frame's."""

    def __init__(self, path, K, gray=False):
        self.path, self.K, self.gray = path, K, gray
        self.stem = os.path.splitext(os.path.basename(path))[0]

    def load_color(self):
        img = cv2.imread(self.path, cv2.IMREAD_GRAYSCALE if self.gray else cv2.IMREAD_COLOR)
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if self.gray else cv2.COLOR_BGR2RGB)


def out_of_map_images(data_root, every=3):
    """EuRoC cam0 (every ``every``-th image) and the TUM office frames."""
    euroc = os.path.join(data_root, 'euroc_v1_01_cam0', 'cam0')
    fx, fy, cx, cy = 458.654, 457.296, 367.215, 248.375      # cam0/sensor.yaml
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    out = [OutOfMapImage(p, K, gray=True)
           for p in sorted(glob.glob(os.path.join(euroc, 'data', '*.png')))[::every]]
    tum = os.path.join(data_root, 'tum_fr3_long_office_rgb')
    if os.path.isdir(tum):
        Kt = np.loadtxt(os.path.join(tum, 'camera-intrinsics.txt'))
        out += [OutOfMapImage(p, Kt) for p in sorted(glob.glob(os.path.join(tum,
                                                                           '*.color.png')))]
    return out

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
Posed RGB-D folders in the 7-Scenes layout, and frame lists.

Two layouts load:

* flat: ``frame-XXXXXX.color.{jpg,png}``, ``frame-XXXXXX.depth.png`` (uint16 mm, 0 or 65535 =
  invalid), ``frame-XXXXXX.pose.txt`` (4x4 world_from_cam) and ``camera-intrinsics.txt`` in one
  folder; frame stems look like ``frame-000350``;
* the original 7-Scenes tree: ``seq-XX/`` folders with ``TrainSplit.txt`` / ``TestSplit.txt``
  (lines ``sequence1``...); frame stems look like ``seq-01/frame-000350``.
"""

from dataclasses import dataclass
import json
import os
import re

import cv2
import numpy as np

from scene_reloc.geometry import nearest_rotation

# Published 7-Scenes calibration, used for the original tree that ships no intrinsics file.
SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
INVALID_DEPTH_MM = (0, 65535)
CAMERA_RECORD = 'camera.json'
"""Optional file of a folder: how its images were made (``bag-to-dataset`` writes it): ``images``
(``pinhole``, ``undistorted`` or ``distorted``), the pinhole ``K`` and the ``source`` camera."""


class DataError(ValueError):
    """A posed-image folder, frame list or image that cannot be used, with what to do about it."""


@dataclass
class PosedFrame:
    """One posed RGB-D frame on disk."""

    stem: str
    color_path: str
    depth_path: str | None
    pose_path: str
    K: np.ndarray
    pose: np.ndarray | None = None
    """A pose that replaces the file's (e.g. refined by bundle adjustment while memorizing)."""

    def load_color(self):
        """Read the colour image as HxWx3 RGB uint8."""
        return read_color(self.color_path)

    def load_depth(self):
        """Read depth as HxW float32 metres, 0 where invalid; ``None`` if the frame has none."""
        if self.depth_path is None or not os.path.exists(self.depth_path):
            return None
        return read_depth_mm(self.depth_path)

    def load_pose(self):
        """Read the 4x4 world_from_cam pose (metres)."""
        if self.pose is not None:
            return self.pose.copy()
        return read_pose(self.pose_path)


def read_color(path):
    """Read an image file as RGB uint8, or raise :class:`DataError` saying what is wrong."""
    if not os.path.exists(path):
        raise DataError(f'image not found: {path}')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f'cannot decode image {path}: corrupt or not an image file')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth_mm(path):
    """Read a uint16 millimetre depth PNG into float32 metres with 0 for invalid pixels."""
    d = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if d is None:
        raise DataError(f'cannot decode depth image {path}')
    if d.dtype != np.uint16 or d.ndim != 2:
        raise DataError(f'depth image {path} must be single-channel uint16 millimetres, '
                        f'got {d.dtype} with shape {d.shape}')
    out = d.astype(np.float32) / 1000.0
    out[np.isin(d, INVALID_DEPTH_MM)] = 0.0
    return out


def read_pose(path):
    """Read a 4x4 pose text file and check that it is rigid."""
    try:
        T = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f'cannot read pose {path}: {e}') from e
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise DataError(f'pose {path} must hold a finite 4x4 matrix, got shape {T.shape}')
    R = T[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3:
        raise DataError(f'pose {path} is not a rigid transform (rotation not orthonormal)')
    # Real pose files are orthonormal only to ~1e-4 (7-Scenes); project onto SO(3) so that
    # every consumer (scene coordinates, errors, TF quaternions) sees a true rotation.
    T = T.copy()
    T[:3, :3] = nearest_rotation(R)
    T[3] = (0.0, 0.0, 0.0, 1.0)
    return T


def read_intrinsics(path):
    """Read a 3x3 intrinsics matrix from a text file."""
    try:
        K = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f'cannot read intrinsics {path}: {e}') from e
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(f'intrinsics {path} must hold a 3x3 K with positive focal lengths')
    return K


def write_frame(root, stem, rgb, depth_m, world_from_cam):
    """Write one frame in the flat layout (colour PNG, uint16 mm depth, pose text)."""
    base = os.path.join(root, stem)
    os.makedirs(os.path.dirname(base) or '.', exist_ok=True)
    cv2.imwrite(base + '.color.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if depth_m is not None:
        mm = np.round(np.nan_to_num(depth_m) * 1000.0)
        mm[(mm <= 0) | (mm >= 65535)] = 0
        cv2.imwrite(base + '.depth.png', mm.astype(np.uint16))
    np.savetxt(base + '.pose.txt', world_from_cam)


_FRAME_RE = re.compile(r'^(frame-\d+)\.color\.(jpg|png)$')


class PosedFrameFolder:
    """
    A folder of posed RGB-D frames, flat or in the original 7-Scenes tree.

    >>> folder = PosedFrameFolder('/data/redkitchen')          # doctest: +SKIP
    >>> frames = folder.frames(parse_frame_list('0:700:35', folder))  # doctest: +SKIP
    """

    def __init__(self, root):
        if not os.path.isdir(root):
            raise DataError(f'data folder not found: {root}')
        self.root = root
        self.is_tree = any(re.match(r'^seq-\d+$', d) and os.path.isdir(os.path.join(root, d))
                           for d in os.listdir(root))
        self._color_ext = {}
        for sub in self._sequence_dirs():
            for name in os.listdir(os.path.join(root, sub)):
                m = _FRAME_RE.match(name)
                if m:
                    self._color_ext[os.path.join(sub, m.group(1)) if sub else m.group(1)] = \
                        m.group(2)
        if not self._color_ext:
            raise DataError(f'no frame-XXXXXX.color.{{jpg,png}} files in {root} '
                            '(expected the 7-Scenes frame layout)')
        self.K = self._find_intrinsics()
        self.camera = self._read_camera_record()

    def _sequence_dirs(self):
        if not self.is_tree:
            return ['']
        return sorted(d for d in os.listdir(self.root) if re.match(r'^seq-\d+$', d))

    def _find_intrinsics(self):
        path = os.path.join(self.root, 'camera-intrinsics.txt')
        if os.path.exists(path):
            return read_intrinsics(path)
        if self.is_tree:
            return SEVEN_SCENES_K.copy()
        raise DataError(f'{path} is missing: write the 3x3 colour intrinsics K there')

    def _read_camera_record(self):
        """Read ``camera.json`` if present; refuse distorted images or a disagreeing K."""
        path = os.path.join(self.root, CAMERA_RECORD)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                record = json.load(f)
            images, K = record['images'], np.asarray(record['K'], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f'{path} is not a camera record ({type(e).__name__}: {e}); '
                            'restore it or remove it') from None
        if images == 'distorted':
            src = record.get('source', {})
            raise DataError(f'{path} says the images are distorted '
                            f'({src.get("distortion_model", "?")}, D {src.get("d", "?")}): the '
                            'pinhole core would learn the wrong geometry; undistort them first '
                            "(bag-to-dataset does it with the recording's CameraInfo, as the "
                            'node does for every query)')
        if images not in ('pinhole', 'undistorted'):
            raise DataError(f'{path}: images is {images!r}; expected pinhole, undistorted or '
                            'distorted')
        if K.shape != (3, 3) or not np.allclose(K, self.K, rtol=1e-6, atol=1e-6):
            raise DataError(f'{path} gives K {K.tolist()} but camera-intrinsics.txt gives '
                            f'{self.K.tolist()}: one of them was edited; make them agree')
        return record

    def stems(self):
        """All frame stems, sorted."""
        return sorted(self._color_ext)

    def split(self, name):
        """Frame stems of the original tree's ``train`` or ``test`` split."""
        if not self.is_tree:
            raise DataError(f'{self.root} is a flat folder: the train/test splits need the '
                            'original 7-Scenes tree (seq-XX/ with TrainSplit.txt)')
        path = os.path.join(self.root, {'train': 'TrainSplit.txt', 'test': 'TestSplit.txt'}[name])
        if not os.path.exists(path):
            raise DataError(f'{path} is missing')
        seqs = []
        for line in open(path).read().split():
            m = re.search(r'(\d+)$', line)
            if m:
                seqs.append(f'seq-{int(m.group(1)):02d}')
        return [s for s in self.stems() if s.split('/')[0] in seqs]

    def frames(self, stems):
        """Resolve frame stems to :class:`PosedFrame` objects, checking the files exist."""
        out = []
        for stem in stems:
            if stem not in self._color_ext:
                raise DataError(f'frame {stem!r} is not in {self.root}')
            base = os.path.join(self.root, stem)
            pose = base + '.pose.txt'
            if not os.path.exists(pose):
                raise DataError(f'{pose} is missing')
            out.append(PosedFrame(stem, f'{base}.color.{self._color_ext[stem]}',
                                  base + '.depth.png', pose, self.K))
        return out


def parse_frame_list(spec, folder):
    """
    Turn a frame-list argument into frame stems.

    ``spec`` is a text file with one stem per line (``#`` starts a comment), ``train`` /
    ``test`` for the original tree's splits, ``all``, or a range ``a:b:s`` of frame numbers
    (``range(a, b, s)``) in a flat folder.
    """
    if spec in ('train', 'test'):
        return folder.split(spec)
    if spec == 'all':
        return folder.stems()
    if re.fullmatch(r'\d+:\d+(:\d+)?', spec) and not os.path.exists(spec):
        a, b, *s = (int(x) for x in spec.split(':'))
        stems = [f'frame-{i:06d}' for i in range(a, b, s[0] if s else 1)]
        if folder.is_tree:
            raise DataError('a range frame list needs a flat folder; use a list file of '
                            'seq-XX/frame-XXXXXX stems for the 7-Scenes tree')
        return stems
    if not os.path.exists(spec):
        raise DataError(f'frame list not found: {spec} (a file, train, test, all or a:b:s)')
    stems = []
    for line in open(spec):
        line = line.split('#', 1)[0].strip()
        if line:
            stems.append(line.replace('.color.jpg', '').replace('.color.png', ''))
    if not stems:
        raise DataError(f'frame list {spec} names no frames')
    return stems

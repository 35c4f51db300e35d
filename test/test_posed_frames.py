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

import os

import cv2
import numpy as np
import pytest

from scene_reloc.posed_frames import DataError, parse_frame_list, PosedFrameFolder, write_frame


def make_flat(root, n=5, size=(40, 30)):
    os.makedirs(root, exist_ok=True)
    np.savetxt(os.path.join(root, 'camera-intrinsics.txt'),
               np.array([[50.0, 0, 20], [0, 50, 15], [0, 0, 1]]))
    rng = np.random.default_rng(0)
    for i in range(n):
        T = np.eye(4)
        T[:3, 3] = [i * 0.1, 0, 0]
        rgb = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        write_frame(root, f'frame-{i:06d}', rgb, np.full((size[1], size[0]), 1.5), T)


def test_flat_layout_loads_with_lists_and_ranges(tmp_path):
    root = str(tmp_path / 'flat')
    make_flat(root)
    folder = PosedFrameFolder(root)
    assert not folder.is_tree and folder.K[0, 0] == 50
    assert parse_frame_list('0:5:2', folder) == ['frame-000000', 'frame-000002', 'frame-000004']
    lst = tmp_path / 'list.txt'
    lst.write_text('# memorize these\nframe-000001\n\nframe-000003  # trailing comment\n')
    frames = folder.frames(parse_frame_list(str(lst), folder))
    assert [f.stem for f in frames] == ['frame-000001', 'frame-000003']
    f = frames[1]
    assert f.load_color().shape == (30, 40, 3)
    assert np.allclose(f.load_depth(), 1.5)
    assert np.isclose(f.load_pose()[0, 3], 0.3)


def test_depth_invalid_values_become_zero(tmp_path):
    root = str(tmp_path / 'flat')
    make_flat(root, n=1)
    d = np.full((30, 40), 1000, np.uint16)
    d[0, 0], d[0, 1] = 0, 65535
    cv2.imwrite(os.path.join(root, 'frame-000000.depth.png'), d)
    depth = PosedFrameFolder(root).frames(['frame-000000'])[0].load_depth()
    assert depth[0, 0] == 0 and depth[0, 1] == 0 and depth[1, 1] == 1.0


def test_original_seven_scenes_tree_with_splits(tmp_path):
    root = tmp_path / 'chess'
    for seq in ('seq-01', 'seq-02', 'seq-03'):
        make_flat(str(root / seq), n=3)
        os.remove(root / seq / 'camera-intrinsics.txt')
    (root / 'TrainSplit.txt').write_text('sequence1\nsequence3\n')
    (root / 'TestSplit.txt').write_text('sequence2\n')
    folder = PosedFrameFolder(str(root))
    assert folder.is_tree and folder.K[0, 0] == 585  # published 7-Scenes calibration
    train = parse_frame_list('train', folder)
    assert len(train) == 6 and all(s.split('/')[0] in ('seq-01', 'seq-03') for s in train)
    test = folder.frames(parse_frame_list('test', folder))
    assert [f.stem for f in test] == [f'seq-02/frame-00000{i}' for i in range(3)]
    assert test[0].load_color().shape == (30, 40, 3)


def test_bad_inputs_give_clear_errors(tmp_path):
    root = str(tmp_path / 'flat')
    make_flat(root, n=2)
    folder = PosedFrameFolder(root)
    with pytest.raises(DataError, match='not in'):
        folder.frames(['frame-000099'])
    with pytest.raises(DataError, match='frame list not found'):
        parse_frame_list(str(tmp_path / 'nope.txt'), folder)
    with open(os.path.join(root, 'frame-000001.color.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n garbage')
    with pytest.raises(DataError, match='corrupt'):
        folder.frames(['frame-000001'])[0].load_color()
    np.savetxt(os.path.join(root, 'frame-000000.pose.txt'), np.ones((4, 4)))
    with pytest.raises(DataError, match='not a rigid'):
        folder.frames(['frame-000000'])[0].load_pose()
    os.remove(os.path.join(root, 'camera-intrinsics.txt'))
    with pytest.raises(DataError, match='camera-intrinsics.txt is missing'):
        PosedFrameFolder(root)
    with pytest.raises(DataError, match='no frame'):
        PosedFrameFolder(str(tmp_path))


def test_pose_rotations_are_projected_onto_so3(tmp_path):
    from scene_reloc.geometry import look_at
    from scene_reloc.posed_frames import read_pose
    T = look_at([0.3, 0.1, 1.2], [2, 1, 1])
    scaled = T.copy()
    scaled[:3, :3] *= 0.9998                    # as in the 7-Scenes pose files
    np.savetxt(tmp_path / 'p.pose.txt', scaled)
    R = read_pose(str(tmp_path / 'p.pose.txt'))[:3, :3]
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.allclose(R, T[:3, :3], atol=1e-12)

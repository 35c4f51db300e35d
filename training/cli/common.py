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

"""Arguments shared by several ``scene-reloc`` commands."""

FRAMES_HELP = ('frame list: a text file with one frame stem per line (# comments), "train"/"test" '
               'for the original 7-Scenes tree, "all", or a range a:b:s of frame numbers')


def add_common(p):
    """Add --device and --backbone-weights."""
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='where the networks run (default: auto = cuda if available)')
    p.add_argument('--backbone-weights', metavar='PATH',
                   help='backbone weights file (ALIKE .pth); for evaluate/localize, only if the '
                        'one recorded in the map has moved')


def add_runtime(p):
    """Add --runtime (what runs the backbone when a map is queried)."""
    p.add_argument('--runtime', default='auto', choices=['auto', 'torch', 'onnxruntime', 'onednn'],
                   help='what runs the backbone: auto = on the CPU, onednn (fused bf16 '
                   'convolutions) where it has AMX, else ONNX Runtime where installed; torch on '
                   'CUDA')


def add_scene_arguments(p):
    """Add the arguments that pick the training and validation scenes (pretrain, meta-train)."""
    p.add_argument('--data', nargs='+', default=[], help='posed RGB-D folders, one a scene')
    p.add_argument('--corpus', metavar='JSON', help='corpus.json from scene-reloc make-corpus: '
                   'its train scenes are trained on, its val scenes validate')
    p.add_argument('--hold-out', nargs='+', default=[], metavar='NAME',
                   help='scenes (folder or corpus names) never trained or validated on: '
                   'leave-one-scene-out evaluation')
    p.add_argument('--max-scenes', type=int, default=0,
                   help='train on the first N scenes only (0: all)')
    p.add_argument('--val-scenes', type=int, default=2, help='val scenes used (corpus)')
    p.add_argument('--frames', default='memorize.txt',
                   help=FRAMES_HELP + '; a file name is looked up in each scene folder')


def scene_roots(a):
    """Return (training scene folders, validation scene folders) from --data / --corpus."""
    roots, val = list(a.data), []
    if a.corpus:
        from scene_reloc_training.learn.corpus import corpus_scenes
        roots += corpus_scenes(a.corpus, 'train')   # never the held-out test scenes
        val = corpus_scenes(a.corpus, 'val')[:a.val_scenes]
    if a.hold_out:
        from scene_reloc_training.learn.corpus import hold_out
        kept = set(hold_out(roots + val, a.hold_out, a.corpus))
        roots, val = [r for r in roots if r in kept], [v for v in val if v in kept]
    if a.max_scenes:
        roots = roots[:a.max_scenes]
    if not roots:
        raise ValueError('no scenes: pass --data DIR... and/or --corpus corpus.json')
    return roots, val


def add_recording_arguments(p):
    """Add what picks the frames of a robot recording (bag-to-dataset, teach)."""
    p.add_argument('--image-topic', required=True)
    p.add_argument('--camera-info-topic', required=True)
    p.add_argument('--depth-topic', help='depth image topic (16UC1 mm or 32FC1 m), registered '
                   'to the colour image; without it no depth is written')
    p.add_argument('--world-frame', default='map', help='frame the poses are expressed in')
    p.add_argument('--camera-frame', help='camera frame in /tf (default: image frame_id)')
    p.add_argument('--every', type=int, default=1,
                   help='consider every N-th image only (before the keyframe rule)')
    p.add_argument('--min-translation', type=float, default=0.05, metavar='M',
                   help='keyframes: keep an image once the camera moved M metres since the '
                   'last kept one (default 0.05)...')
    p.add_argument('--min-rotation', type=float, default=5.0, metavar='DEG',
                   help='...or turned DEG degrees (default 5; 0 and 0 keep every image)')
    p.add_argument('--max-frames', type=int, default=300,
                   help='keep at most N keyframes, evenly spread (default 300; 0: no cap)')


def recording_kwargs(a):
    """Keyword arguments of :func:`bag_to_dataset` from :func:`add_recording_arguments`."""
    from scene_reloc_training.data.bag_frames import KeyframeRule
    return {'image_topic': a.image_topic, 'info_topic': a.camera_info_topic,
            'world_frame': a.world_frame, 'camera_frame': a.camera_frame,
            'depth_topic': a.depth_topic, 'every': a.every,
            'keyframes': KeyframeRule(a.min_translation, a.min_rotation, a.max_frames)}

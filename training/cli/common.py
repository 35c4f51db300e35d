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
    p.add_argument('--runtime', default='auto', choices=['auto', 'torch', 'onnxruntime'],
                   help='what runs the backbone: auto = ONNX Runtime on the CPU where installed '
                   '(faster), torch on CUDA')


def add_scene_arguments(p):
    """Add the arguments that pick the training and validation scenes (pretrain, meta-train)."""
    p.add_argument('--data', nargs='+', default=[], help='posed RGB-D folders, one a scene')
    p.add_argument('--corpus', metavar='JSON', help='corpus.json from scene-reloc make-corpus: '
                   'its train scenes are trained on, its val scenes validate')
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
    if a.max_scenes:
        roots = roots[:a.max_scenes]
    if not roots:
        raise ValueError('no scenes: pass --data DIR... and/or --corpus corpus.json')
    return roots, val

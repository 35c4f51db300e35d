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
A corpus of scenes for pretraining: many varied synthetic rooms plus the user's posed folders.

``corpus.json`` lists every scene with its split: ``train`` scenes are what pretraining and
meta-training see, ``val`` scenes measure them while they run, ``test`` scenes are held out for
the few-shot benchmarks and must never be trained on. Splits are drawn once, by seed, when the
corpus is made; :func:`corpus_scenes` refuses to hand ``test`` scenes to training code.

Real posed folders join as train scenes (:func:`add_real_scenes`, ``make-corpus --add``, also
to an existing corpus): each becomes a *view* inside the corpus folder, symbolic links to its
frames under new flat names with ``memorize.txt`` / ``query.txt`` frame lists, so that every
loader reads it like a rendered scene and nothing is written into the user's folder. Leaving
one real scene out of training is ``--hold-out NAME`` of ``pretrain`` / ``meta-train``.
"""

import json
import os

import numpy as np
from tqdm import tqdm

from scene_reloc.posed_frames import CAMERA_RECORD, PosedFrameFolder
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene

FORMAT = 1


def make_corpus(out, num_scenes, seed=0, val_fraction=0.1, test_fraction=0.2, memorize=20,
                query=30, width=320, height=240, extra=(), progress=True):
    """
    Render ``num_scenes`` synthetic rooms into ``out`` and write ``corpus.json``.

    Room size, furniture, textures and the query lighting vary by seed; ``extra`` posed
    folders join as train scenes.

    :return: the manifest dict.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    order = rng.permutation(num_scenes)
    n_test = int(round(test_fraction * num_scenes))
    n_val = int(round(val_fraction * num_scenes))
    split = {int(i): 'test' for i in order[:n_test]}
    split.update({int(i): 'val' for i in order[n_test:n_test + n_val]})
    scenes = []
    for i in tqdm(range(num_scenes), desc='rendering scenes', unit='scene', disable=not progress):
        size = rng.uniform([3.5, 3.0, 2.4], [7.0, 6.0, 3.0])
        objects = int(rng.integers(3, 11))
        name = f'synthetic-{i:04d}'
        root = os.path.join(out, name)
        write_synthetic_scene(root, seed=seed * 100_003 + i, num_memorize=memorize,
                              num_query=query, width=width, height=height, query_lighting=True,
                              room_size=tuple(float(v) for v in size), num_objects=objects)
        scenes.append({'name': name, 'path': name, 'split': split.get(i, 'train'),
                       'synthetic': {'seed': seed * 100_003 + i, 'room_size': size.round(3)
                                     .tolist(), 'objects': objects}})
    manifest = {'format': FORMAT, 'seed': seed, 'frames': {'memorize': memorize, 'query': query},
                'image_size': [width, height], 'scenes': scenes}
    _write(out, manifest)
    if extra:
        manifest = add_real_scenes(os.path.join(out, 'corpus.json'), extra, memorize, query)
    return manifest


def _write(out, manifest):
    path = os.path.join(out, 'corpus.json')
    with open(path + '.part', 'w') as f:
        json.dump(manifest, f, indent=2)
    os.replace(path + '.part', path)


def add_real_scenes(corpus_json, paths, memorize=20, query=30):
    """
    Add posed folders to a corpus as train scenes (views: links and frame lists).

    ``memorize`` frames evenly spread over each folder are its memorized frames, ``query`` of
    the others (evenly spread) its queries.

    :raises ValueError: a folder that is not a posed folder, or a name already in the corpus.
    :return: the updated manifest.
    """
    with open(corpus_json) as f:
        manifest = json.load(f)
    out = os.path.dirname(os.path.abspath(corpus_json))
    names = {s['name'] for s in manifest['scenes']}
    for path in paths:
        name = os.path.basename(os.path.normpath(path))
        if name in names:
            raise ValueError(f'{corpus_json} already has a scene named {name}: rename the '
                             'folder (the name is what --hold-out refers to)')
        try:
            folder = PosedFrameFolder(path)
        except ValueError as e:   # DataError
            raise ValueError(f'{path} cannot join the corpus: {e}') from e
        n = _write_view(folder, os.path.join(out, name), memorize, query)
        manifest['scenes'].append({'name': name, 'path': name, 'split': 'train',
                                   'real': {'source': os.path.abspath(path), 'frames': n}})
        names.add(name)
    _write(out, manifest)
    return manifest


def _write_view(folder, view, memorize, query):
    """
    Link ``folder``'s frames into ``view`` as frame-000000...; return the frame count.

    The view is built under a temporary name and renamed when complete.
    """
    if os.path.exists(view):
        raise ValueError(f'{view} exists but is no scene of the corpus: remove it, then add '
                         'the folder again')
    frames = folder.frames(folder.stems())
    final, view = view, f'{view}.partial-{os.getpid()}'
    os.makedirs(view)
    for i, f in enumerate(frames):
        new = os.path.join(view, f'frame-{i:06d}')
        os.symlink(os.path.abspath(f.color_path),
                   new + '.color' + os.path.splitext(f.color_path)[1])
        os.symlink(os.path.abspath(f.pose_path), new + '.pose.txt')
        if f.depth_path and os.path.exists(f.depth_path):
            os.symlink(os.path.abspath(f.depth_path), new + '.depth.png')
    np.savetxt(os.path.join(view, 'camera-intrinsics.txt'), folder.K)
    if folder.camera:
        with open(os.path.join(view, CAMERA_RECORD), 'w') as f:
            json.dump(folder.camera, f, indent=2)
    n = len(frames)
    mem = sorted(set(np.linspace(0, n - 1, min(memorize, n)).round().astype(int).tolist()))
    rest = sorted(set(range(n)) - set(mem))
    pick = np.linspace(0, len(rest) - 1, min(query, len(rest))).round().astype(int) if rest \
        else []
    for name, ids in (('memorize.txt', mem), ('query.txt', sorted({rest[j] for j in pick}))):
        with open(os.path.join(view, name), 'w') as f:
            f.write(''.join(f'frame-{i:06d}\n' for i in ids))
    os.replace(view, final)
    return n


def hold_out(roots, names, corpus_json=None):
    """
    Return ``roots`` without the scenes named ``names`` (folder names).

    :raises ValueError: a name that is none of the scenes (a typo must not train on the
        scene it meant to hold out).
    """
    names = set(names or [])
    known = {os.path.basename(os.path.normpath(r)) for r in roots}
    if corpus_json:
        with open(corpus_json) as f:
            known |= {s['name'] for s in json.load(f)['scenes']}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f'--hold-out {" ".join(unknown)}: no such scene; scenes: '
                         f'{", ".join(sorted(known))}')
    return [r for r in roots if os.path.basename(os.path.normpath(r)) not in names]


def corpus_scenes(corpus_json, split):
    """
    Return the absolute folders of the scenes of one split.

    :raises ValueError: unknown split or format; asking for ``test`` scenes is allowed only
        through ``split='test'`` (benchmarks), never mixed into ``train``.
    """
    with open(corpus_json) as f:
        manifest = json.load(f)
    if manifest.get('format') != FORMAT:
        raise ValueError(f'{corpus_json}: corpus format {manifest.get("format")}, expected '
                         f'{FORMAT}')
    if split not in ('train', 'val', 'test'):
        raise ValueError(f'split must be train, val or test, got {split!r}')
    base = os.path.dirname(os.path.abspath(corpus_json))
    return [os.path.join(base, s['path']) for s in manifest['scenes'] if s['split'] == split]

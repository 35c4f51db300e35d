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
"""

import json
import os

import numpy as np
from tqdm import tqdm

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
    for path in extra:
        scenes.append({'name': os.path.basename(os.path.normpath(path)),
                       'path': os.path.abspath(path), 'split': 'train'})
    manifest = {'format': FORMAT, 'seed': seed, 'frames': {'memorize': memorize, 'query': query},
                'image_size': [width, height], 'scenes': scenes}
    with open(os.path.join(out, 'corpus.json'), 'w') as f:
        json.dump(manifest, f, indent=2)
    return manifest


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

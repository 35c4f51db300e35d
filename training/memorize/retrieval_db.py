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
Which retrieval model a new map's database is built with (``memorize --retrieval-model``).

``auto`` takes the first retrieval model in ``$SCENE_RELOC_RETRIEVAL_MODELS`` and then among the
shipped weights (``training/pretrained/``) that was trained for this backbone and its weights,
else the built-in untrained GeM; a path must fit the backbone or is refused.
"""

import os

from scene_reloc.artifact import safetensors_in
from scene_reloc.retrieval.database import model_reference, SEARCH_ENV, untrained_model
from scene_reloc.retrieval.model import RetrievalModel
from scene_reloc_training.memorize.head_init import SHIPPED


def _fits(manifest, backbone, backbone_sha256, local_dim):
    bb = manifest.get('backbone', {})
    if bb.get('name') != backbone or (bb.get('weights_sha256') or None) != (backbone_sha256
                                                                             or None):
        return f'made for backbone {bb.get("name")} with other weights'
    if manifest.get('config', {}).get('local_dim') != local_dim:
        return f'made for {manifest.get("config", {}).get("local_dim")}-value descriptors'
    return ''


def resolve_retrieval_model(setting, backbone, backbone_sha256, local_dim):
    """
    Choose the retrieval model of a new map.

    :return: (model, reference dict for the manifest).
    :raises ValueError: an explicit path that does not fit.
    """
    if setting not in (None, '', 'auto'):
        model, manifest = RetrievalModel.load(setting)
        why = _fits(manifest, backbone, backbone_sha256, local_dim)
        if why:
            raise ValueError(f'--retrieval-model {setting} does not fit this map: {why}')
        return model, model_reference(model, setting)
    folders = os.environ.get(SEARCH_ENV, '').split(':') + [SHIPPED]
    for path in safetensors_in(folders):
        try:
            model, manifest = RetrievalModel.load(path)
        except ValueError:
            continue
        if not _fits(manifest, backbone, backbone_sha256, local_dim):
            return model, model_reference(model, path)
    model = untrained_model(local_dim)
    return model, model_reference(model)

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
Memorizing one scene: posed frames in, a scene map out (``scene-reloc memorize``).

- ``memorize_scene``: the entry point, ``memorize(frames, out, MemorizeConfig)``, for both scene
  models; reads the frames, builds the labels and the feature buffer, trains the head, writes
  the map;
- region classifier: ``scene_coordinates`` (depth -> scene points), ``feature_buffer``
  (backbone passes over augmented views), ``region_training`` (the head on that buffer),
  ``head_init`` (the meta-learned start it begins from);
- landmark detector: ``memorize_landmarks``, ``landmarks`` (selection: visibility, saliency,
  coverage), ``triangulation`` (landmarks without depth), ``landmark_training``;
- shared: ``augment`` (photometric and geometric views), ``resumable`` (checkpointed training).
"""

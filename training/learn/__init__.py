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
Learning across many scenes: what every new scene then starts from.

- ``corpus``: a corpus of posed scenes with train / val / test splits (``make-corpus``);
- ``pretrain_backbone``, ``pretrain_data``: one backbone trained with a head per scene
  (``scene-reloc pretrain``);
- ``meta_train``: the Reptile start of the region classifier (``scene-reloc meta-train``);
- ``distributed``: joining a torchrun process group.

Test scenes of a corpus never reach this package's training code.
"""

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
Offline tooling of scene_reloc (installed as ``scene_reloc_training``).

- ``cli/``: the ``scene-reloc`` command, one thin argparse module per command group (one
  scene, data, pretraining, meta-training);
- ``memorize/``: one scene from posed frames to a scene map (both scene models);
- ``learn/``: across many scenes: the corpus, backbone pretraining, the meta-learned start;
- ``data/``: synthetic scenes, ROS 2 bags in and out, offline replay of a bag;
- ``pretrained/``: weights this project trained itself and ships.

Imports the core (``scene_reloc``); nothing in the core imports this package.
"""

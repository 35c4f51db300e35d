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
Data in and out of scene_reloc: synthetic scenes, ROS 2 bags, offline replay.

- ``synthetic_scene``: rendered posed RGB-D rooms, deterministic by seed (tests, demo, corpus);
- ``bags``: posed frames to a ROS 2 bag and a robot's bag back to posed frames;
- ``replay``: localize every image of a bag against its ground truth (``replay-eval``).
"""

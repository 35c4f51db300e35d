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
Head training arithmetic: the core's bf16-where-native rule (:mod:`scene_reloc.precision`).

Under ``autocast`` the heads' products run in bf16; weights, optimiser state and losses stay
float32.
"""

from scene_reloc.precision import (  # noqa: F401 - the training side's names for them
    autocast,
    cpu_has_native_bf16,
    PRECISIONS,
    resolve_precision,
)

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

"""Joining a torchrun process group (pretraining and meta-training scale out the same way)."""

import os


def init_distributed(device):
    """Join the torchrun process group when started by torchrun; return the rank."""
    import torch
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1:   # not started by torchrun
        return 0
    backend = 'nccl' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()) \
        else 'gloo'
    torch.distributed.init_process_group(backend)
    if backend == 'nccl':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    return torch.distributed.get_rank()

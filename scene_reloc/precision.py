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
bfloat16 where the hardware computes it natively, float32 elsewhere.

The scene heads are small MLPs; on a CPU with bf16 dot-product instructions (AVX512-BF16, AMX,
Armv8.6 BF16) their matrix products run 2-3x faster under autocast. Elsewhere bf16 is emulated
and slower, so ``auto`` keeps float32 there. Only the heads' products run in bf16: descriptor
similarities, geometry and losses stay float32.

What runs in float32 runs in full float32 (:func:`no_tf32`), also on a GPU, where PyTorch would
otherwise let cuDNN compute float32 convolutions in TF32.
"""

import contextlib
import functools
import os

import torch

PRECISIONS = ('auto', 'bf16', 'fp32')
ALLOW_TF32_ENV = 'SCENE_RELOC_ALLOW_TF32'


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16():
    """Whether this CPU advertises bf16 dot-product instructions (Linux /proc/cpuinfo)."""
    return bool(_cpu_flags() & {'avx512_bf16', 'amx_bf16', 'bf16'})


@functools.lru_cache(maxsize=None)
def _cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_has_amx():
    """Whether this CPU advertises Intel AMX bf16 tiles (Linux /proc/cpuinfo)."""
    return 'amx_bf16' in _cpu_flags()


def resolve_precision(precision, device):
    """Turn ``auto | bf16 | fp32`` into ``bf16`` or ``fp32`` on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if precision != 'auto':
        return precision
    dev = torch.device(device)
    if dev.type == 'cuda':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp32'
    return 'bf16' if dev.type == 'cpu' and cpu_has_native_bf16() else 'fp32'


def autocast(device, precision):
    """Return the autocast context of a resolved ``precision`` on ``device`` (no-op for fp32)."""
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16,
                          enabled=precision == 'bf16')


@contextlib.contextmanager
def no_tf32():
    """
    Run the block with float32 convolutions and matrix products in full float32 (no TF32).

    PyTorch lets cuDNN compute float32 convolutions in TF32 (a 10-bit mantissa) by default on
    Ampere and later GPUs. On an H200 that cost the landmark detector 4 of the 69 dev-20
    queries (92.8 % within 5 cm / 5 deg against 98.6 % with TF32 off, memorize and queries on
    the GPU, one run each; bench/gpu_check.sh), the region classifier 1 (98.6 % against 100 %).
    The flags are PyTorch's globals, so they are restored afterwards; on a CPU they change
    nothing. ``SCENE_RELOC_ALLOW_TF32=1`` in the environment leaves PyTorch's flags as they are
    (to measure what TF32 does, as bench/gpu_check.sh does).
    """
    if os.environ.get(ALLOW_TF32_ENV) == '1':
        yield
        return
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul

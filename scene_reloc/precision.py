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

Queries and memorize run their float32 work in full float32 (:func:`no_tf32`), also on a GPU,
where PyTorch would otherwise let cuDNN compute float32 convolutions in TF32 (training keeps
PyTorch's defaults).
"""

import contextlib
import functools
import os
import threading

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


_tf32_lock = threading.Lock()
_tf32_users = 0      # blocks inside no_tf32, in all threads
_tf32_saved = None   # PyTorch's flags before the first of them


def _tf32_flags():
    """PyTorch's TF32 switches as ``(api, conv, matmul)``, to be given back to ``_set_tf32``."""
    try:
        return 'legacy', torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:   # the process set them through the newer fp32_precision API
        return ('fp32_precision', torch.backends.cudnn.conv.fp32_precision,
                torch.backends.cuda.matmul.fp32_precision)


def _set_tf32(api, conv, matmul):
    if api == 'legacy':
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
    else:
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = matmul


@contextlib.contextmanager
def no_tf32():
    """
    Run the block with float32 convolutions and matrix products in full float32 (no TF32).

    PyTorch lets cuDNN compute float32 convolutions in TF32 (a 10-bit mantissa) by default on
    Ampere and later GPUs. On an H200, with PyTorch's defaults, the landmark detector localized
    92.8 % of the 69 dev-20 queries, and 98.6 % with TF32 off (memorize and queries on the GPU;
    one run each, on two machines: a single observation, not a paired test; bench/gpu_check.sh
    now measures both on one machine); the region classifier 98.6 % and 100 %.
    The flags are PyTorch's process-wide globals: the first block to enter (in any thread)
    turns TF32 off and the last to leave restores the flags as they were, through whichever of
    PyTorch's two APIs the process uses. On a CPU they change nothing.
    ``SCENE_RELOC_ALLOW_TF32=1`` in the environment leaves PyTorch's flags as they are (to
    measure what TF32 does, as bench/gpu_check.sh does).
    """
    global _tf32_users, _tf32_saved
    if os.environ.get(ALLOW_TF32_ENV) == '1':
        yield
        return
    with _tf32_lock:
        if _tf32_users == 0:
            _tf32_saved = _tf32_flags()
            off = (False, False) if _tf32_saved[0] == 'legacy' else ('ieee', 'ieee')
            _set_tf32(_tf32_saved[0], *off)
        _tf32_users += 1
    try:
        yield
    finally:
        with _tf32_lock:
            _tf32_users -= 1
            if _tf32_users == 0:
                _set_tf32(*_tf32_saved)

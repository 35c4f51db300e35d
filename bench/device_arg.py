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

"""The ``--device`` option every benchmark takes, its check, and a run's common set-up."""

import os
import sys

import cv2
import torch


def add_device_argument(p):
    """Add ``--device cpu | cuda | auto`` (where our networks memorize and query)."""
    p.add_argument('--device', default='cpu',
                   help='cpu | cuda | auto: where our networks run (default cpu; the peer and '
                   'PnP always run on the CPU)')


def checked_device(name):
    """Return ``name``, or exit with a message when CUDA is asked for and missing."""
    if name.startswith('cuda') and not torch.cuda.is_available():
        sys.exit(f'--device {name}: no CUDA device here (torch sees none); use --device cpu')
    return name


def start_run(a):
    """Check ``a.device``, use ``a.threads`` CPU threads (torch, OpenCV), create ``a.out``."""
    checked_device(a.device)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    os.makedirs(a.out, exist_ok=True)

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

"""The optimiser, schedule and checkpoint a seeded, resumable head training shares."""

import os

import torch

from scene_reloc.precision import autocast, resolve_precision


class ResumableRun:
    """
    AdamW with a one-cycle schedule and a seeded sampling generator, resumable from a file.

    ``start`` is the iteration to continue from (0, or the checkpoint's); ``save(it)`` writes
    model, optimiser, schedule, generator and iteration (loaded back with weights_only=True).
    Losses computed inside ``with run.autocast():`` use ``precision`` (see
    :mod:`scene_reloc.precision`); the optimiser is torch's fused AdamW.
    """

    def __init__(self, model, iterations, lr, weight_decay, seed, checkpoint=None,
                 resume=False, precision='fp32'):
        self.model = model
        self.checkpoint = checkpoint
        self.gen = torch.Generator().manual_seed(seed)
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        try:
            self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                         fused=True)
        except (RuntimeError, TypeError):   # a torch or device without the fused kernel
            self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr,
                                                         total_steps=iterations, pct_start=0.1)
        self.start = 0
        if resume and checkpoint and os.path.exists(checkpoint):
            state = torch.load(checkpoint, map_location='cpu', weights_only=True)
            model.load_state_dict(state['model'])
            self.opt.load_state_dict(state['optimizer'])
            self.sched.load_state_dict(state['scheduler'])
            self.gen.set_state(state['generator'])
            self.start = int(state['iteration'])

    def autocast(self):
        """Return the context to compute the loss in."""
        return autocast(self.device, self.precision)

    def step(self, loss):
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()

    def save(self, iteration):
        if self.checkpoint:
            torch.save({'model': self.model.state_dict(), 'optimizer': self.opt.state_dict(),
                        'scheduler': self.sched.state_dict(), 'generator': self.gen.get_state(),
                        'iteration': iteration}, self.checkpoint)

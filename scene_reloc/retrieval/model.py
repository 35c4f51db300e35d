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
A retrieval model: global descriptor and patch embeddings on top of the frozen backbone.

Input: one image's grid descriptors (Hc, Wc, D) from the frozen backbone's ``extract``.
Output: a global descriptor (``dim`` values, L2-normalised) for the shortlist, and patch
embeddings (one per ``patch_pool`` x ``patch_pool`` block of grid cells, L2-normalised) for
VOP's overlap voting. Saved as one safetensors file with its manifest (never unpickled).
"""

from dataclasses import asdict, dataclass
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from scene_reloc.artifact import (
    ArtifactError,
    load_artifact,
    refuse_unknown_keys,
    refuse_wrong_types,
    save_artifact,
)
from scene_reloc.retrieval.aggregation import GeM, MeanPool, NetVLAD, Whitening

KEY = 'scene_reloc_retrieval'
FORMAT_VERSION = 1
AGGREGATORS = ('netvlad', 'gem', 'mean')


@dataclass
class RetrievalConfig:
    """The shape of a retrieval model (stored in its manifest)."""

    aggregator: str = 'netvlad'
    """netvlad (K soft-assigned residuals), gem (generalised mean) or mean."""
    clusters: int = 16
    """NetVLAD clusters K."""
    local_dim: int = 64
    """Dimension of the backbone's grid descriptors."""
    dim: int = 256
    """Global descriptor dimension after PCA whitening (0: no whitening)."""
    patch_pool: int = 4
    """Grid cells per side of one patch (4: a patch covers 32x32 pixels)."""
    patch_dim: int = 64
    """Patch embedding dimension."""
    positional: bool = False
    """Add a sinusoidal encoding of the patch's place in the image to its embedding input."""
    adapter: bool = True
    """A trained residual linear map of the local descriptors before aggregation (starts as
    the identity); the backbone stays frozen, so this is where the global descriptor learns."""

    @classmethod
    def from_dict(cls, d):
        refuse_unknown_keys(cls, d, 'retrieval')
        refuse_wrong_types(cls, d, 'retrieval')
        cfg = cls(**d)
        if cfg.aggregator not in AGGREGATORS:
            raise ValueError(f'aggregator must be one of {AGGREGATORS}, got {cfg.aggregator!r}')
        return cfg

    def aggregated_dim(self):
        return self.clusters * self.local_dim if self.aggregator == 'netvlad' else self.local_dim


POSITIONAL_FREQS = 4


def positional_encoding(hp, wp, device=None):
    """(hp, wp, 4 * POSITIONAL_FREQS) sin/cos of the patch centre in [-1, 1], per axis."""
    ys = (torch.arange(hp, device=device, dtype=torch.float32) + 0.5) / hp * 2 - 1
    xs = (torch.arange(wp, device=device, dtype=torch.float32) + 0.5) / wp * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing='ij')
    f = (2.0 ** torch.arange(POSITIONAL_FREQS, device=device)) * math.pi / 2
    parts = [fn(g[..., None] * f) for g in (gx, gy) for fn in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=-1)


class RetrievalModel(nn.Module):
    """
    Aggregator (+ whitening) for the global descriptor, linear projection for patches.

    >>> model = RetrievalModel(RetrievalConfig(aggregator='gem', dim=0))
    >>> g = model.global_descriptor(torch.randn(30, 40, 64))      # (64,)
    """

    def __init__(self, cfg: RetrievalConfig):
        super().__init__()
        self.cfg = cfg
        self.aggregator = {'netvlad': lambda: NetVLAD(cfg.clusters, cfg.local_dim),
                           'gem': GeM, 'mean': MeanPool}[cfg.aggregator]()
        self.whitening = Whitening(cfg.aggregated_dim(), cfg.dim) if cfg.dim else None
        self.adapter = nn.Linear(cfg.local_dim, cfg.local_dim) if cfg.adapter else None
        if self.adapter is not None:
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)
        extra = 4 * POSITIONAL_FREQS if cfg.positional else 0
        self.patch_proj = nn.Linear(cfg.local_dim + extra, cfg.patch_dim)
        with torch.no_grad():   # start as a plain (truncated) copy of the pooled descriptor
            self.patch_proj.weight.zero_()
            n = min(cfg.local_dim, cfg.patch_dim)
            self.patch_proj.weight[:n, :n] = torch.eye(n)
            self.patch_proj.bias.zero_()

    def aggregate(self, grid_BHWD):
        """Global descriptors before whitening: (B, aggregated_dim)."""
        return self.aggregator(self.local(grid_BHWD.flatten(1, 2)))

    def local(self, x_BND):
        """Local descriptors as the aggregator sees them (adapted, L2-normalised)."""
        x = F.normalize(x_BND, dim=-1)
        if self.adapter is not None:
            x = F.normalize(x + self.adapter(x), dim=-1)
        return x

    def forward(self, grid_BHWD):
        """Global descriptors (B, dim), L2-normalised."""
        g = self.aggregate(grid_BHWD)
        return self.whitening(g) if self.whitening is not None else g

    def patches(self, grid_BHWD):
        """Patch embeddings (B, Hp, Wp, patch_dim), L2-normalised."""
        p = self.cfg.patch_pool
        x = F.avg_pool2d(grid_BHWD.permute(0, 3, 1, 2), p, p, ceil_mode=True)
        x = F.normalize(x.permute(0, 2, 3, 1), dim=-1)
        if self.cfg.positional:
            pe = positional_encoding(x.shape[1], x.shape[2], x.device)
            x = torch.cat([x, pe.expand(x.shape[0], -1, -1, -1)], dim=-1)
        return F.normalize(self.patch_proj(x), dim=-1)

    @torch.inference_mode()
    def describe(self, grid_HWD):
        """One image: (global descriptor (dim,), patch embeddings (P, patch_dim)), float32."""
        g = grid_HWD[None].float()
        return (self(g)[0].cpu().numpy().astype(np.float32),
                self.patches(g)[0].flatten(0, 1).cpu().numpy().astype(np.float32))

    def save(self, path, backbone, backbone_sha256, info=None, half=False):
        """
        Write the model with its manifest (backbone it is for, how it was made).

        :param half: store float16 (half the size; loading casts back to float32).
        """
        tensors = {k: v.detach().cpu().numpy().astype(np.float16 if half else np.float32)
                   for k, v in self.state_dict().items()}
        manifest = {'kind': 'scene_reloc.retrieval', 'config': asdict(self.cfg),
                    'backbone': {'name': backbone, 'weights_sha256': backbone_sha256},
                    'info': info or {}}
        return save_artifact(path, tensors, manifest, KEY, FORMAT_VERSION)

    @classmethod
    def load(cls, path, device='cpu'):
        """Read a model file; :return: (model in eval mode, manifest)."""
        def check(manifest, tensors):
            try:
                cfg = RetrievalConfig.from_dict(manifest.get('config', {}))
            except (TypeError, ValueError) as e:
                return f'bad retrieval config: {e}'
            want = {k: tuple(v.shape) for k, v in cls(cfg).state_dict().items()}
            got = {k: tuple(v.shape) for k, v in tensors.items()}
            return '' if want == got else f'tensors do not fit the config {asdict(cfg)}'
        manifest, tensors = load_artifact(path, KEY, FORMAT_VERSION, 'retrieval model',
                                          'train it again (scene-reloc train-retrieval)', check,
                                          ArtifactError)
        model = cls(RetrievalConfig.from_dict(manifest['config']))
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
        return model.eval().to(device), manifest

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
The core call: image + intrinsics -> camera pose in the scene, or a reason why not.

Pipeline (one image), the same for every scene model:
1. input checks;
2. backbone features (keypoints and/or the 1/8 grid, as the scene model asks);
3. the scene model (:mod:`scene_reloc.scene_models`, chosen by the map's ``head_type``):
   features -> 2D-3D correspondences, optionally weighted;
4. PnP + RANSAC (poselib), then gating on inlier count, reprojection error and conditioning,
   and the covariance with its floor.
"""

from dataclasses import dataclass, field, fields
import os
import time

import numpy as np

from scene_reloc.artifact import refuse_unknown_keys, refuse_wrong_types
from scene_reloc.backbones import BackboneError, FeatureExtractor
from scene_reloc.pnp import PnPConfig, solve_pnp
from scene_reloc.precision import no_tf32, PRECISIONS
from scene_reloc.scene_map import load_scene_map, SceneMapError
from scene_reloc.scene_models import build_scene_model, FEATURES_KEYPOINTS
from scene_reloc.weights import default_weights_path

# Why a frame was not localized (RelocResult.reason).
OK = 'ok'
BAD_INPUT = 'bad_input'
TOO_FEW_CORRESPONDENCES = 'too_few_correspondences'
RANSAC_FAILED = 'ransac_failed'
TOO_FEW_INLIERS = 'too_few_inliers'
REPROJECTION_TOO_HIGH = 'reprojection_error_too_high'
DEGENERATE = 'degenerate_geometry'

REMAKE = 'memorize the scene again (scene-reloc memorize)'
# What building a model from a manifest that disagrees with its tensors raises.
DAMAGED_FILE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError,
                       RuntimeError, OverflowError)


def with_path(exc, path):
    """Return ``exc`` (a ValueError) with its message prefixed by the file it is about."""
    if type(exc) is ValueError or isinstance(exc, (SceneMapError, BackboneError)):
        return type(exc)(f'{path}: {exc}')
    return exc


def is_out_of_memory(exc):
    """Whether ``exc`` is torch running out of (device) memory: not a damaged file."""
    return type(exc).__name__ == 'OutOfMemoryError'


@dataclass
class LocalizerConfig:
    """Query-time settings; defaults are stored in the map and can be overridden."""

    refinement: str = 'keypoints'
    """``keypoints``: match keypoints in predicted leaves or near landmark peaks; ``none``: not."""
    max_keypoints: int = 2048
    """Keypoints detected per query image."""
    top_regions: int = 2
    """Level-1 regions explored per keypoint."""
    top_leaves: int = 4
    """Leaves searched per keypoint."""
    min_similarity: float = 0.75
    """Lowest descriptor cosine similarity for an in-leaf match."""
    min_leaf_probability: float = 0.02
    """Candidate leaves below this joint probability are not searched."""
    min_inliers: int = 20
    """A pose needs at least this many RANSAC inliers."""
    max_reprojection_error: float = 3.0
    """A pose needs a median inlier reprojection error below this (pixels)."""
    min_landmark_confidence: float = 0.1
    """Landmark detector maps: heatmap peaks below this are not used."""
    covariance_floor_m: float = 0.01
    """Standard deviation added (in quadrature) to each position axis of the covariance."""
    covariance_floor_rad: float = 0.0087
    """Standard deviation added to each rotation axis (0.5 deg). The Gauss-Newton covariance
    assumes independent pixel noise and is far too small for real, correlated errors (NEES
    375 on dev-20 without the floor); the floor makes it safe to fuse in an EKF."""
    snap_radius_px: float = 12.0
    """Landmark maps of format 1: how far a peak may move to its matching keypoint."""
    weighted_pnp: bool = True
    """Refine the pose with the scene model's correspondence weights when it gives them
    (landmark maps queried by their heatmap peaks: the peak values squared)."""
    top_landmarks: int = 16
    """Landmark detector maps: landmarks a keypoint is compared with (highest heatmaps at its
    cell first; 16 beat 8 on a validation split of the kitchen, frames apart from the
    benchmark's queries)."""
    one_keypoint_per_landmark: bool = True
    """Landmark detector maps: of several keypoints matched to one landmark keep the one whose
    descriptor matches best (at most one of them is right; the rest slow RANSAC down)."""
    head_precision: str = 'fp32'
    """Arithmetic of the scene head's products: fp32, bf16, or auto (bf16 where the CPU or GPU
    computes it natively, else fp32). New region maps store auto (on a validation split of the
    kitchen: the same recall and median, 3-10 ms faster); landmark maps keep fp32 (no faster,
    one frame of 60 lost). Descriptor similarities and PnP are always float32."""
    retrieved_frames: int = 0
    """Large maps: restrict the candidates (leaves, landmarks) to what this many memorized
    frames most similar to the query (global descriptor) see; 0: search the whole map."""
    pnp: PnPConfig = field(default_factory=PnPConfig)

    @classmethod
    def from_dict(cls, d):
        """Build from a dict, refusing unknown keys (typos must not pass silently)."""
        d = dict(d or {})
        refuse_unknown_keys(cls, d, 'localizer')
        refuse_wrong_types(cls, d, 'localizer')
        pnp = d.pop('pnp', {})
        if isinstance(pnp, dict):
            refuse_unknown_keys(PnPConfig, pnp, 'pnp')
            refuse_wrong_types(PnPConfig, pnp, 'pnp')
            pnp = PnPConfig(**pnp)
        elif not isinstance(pnp, PnPConfig):
            raise ValueError(f'pnp settings must be a dict, got {pnp!r}')
        cfg = cls(**d, pnp=pnp)
        if pnp.seed < 0 or not pnp.trials_mult > 0:
            raise ValueError(f'pnp seed must be >= 0 and trials_mult > 0, got {pnp.seed} and '
                             f'{pnp.trials_mult}')
        if cfg.refinement not in ('keypoints', 'none'):
            raise ValueError(f'refinement must be keypoints or none, got {cfg.refinement!r}')
        if cfg.head_precision not in PRECISIONS:
            raise ValueError(f'head_precision must be one of {", ".join(PRECISIONS)}, got '
                             f'{cfg.head_precision!r}')
        return cfg

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d['pnp'] = {f.name: getattr(self.pnp, f.name) for f in fields(self.pnp)
                    if f.name not in LATER_PNP_KEYS or getattr(self.pnp, f.name) != f.default}
        return d


# PnP settings newer than the maps' format: written only when they differ from their defaults,
# so a map that does not use them still loads in a node from before them (which refuses keys it
# does not know, as it must for typos).
LATER_PNP_KEYS = ('trials_mult', 'seed')


@dataclass
class RelocResult:
    """Outcome of one query. ``world_from_cam`` is None unless ``success``."""

    success: bool
    reason: str
    world_from_cam: np.ndarray | None = None
    covariance: np.ndarray | None = None
    num_correspondences: int = 0
    num_inliers: int = 0
    reprojection_error_px: float = float('nan')
    seconds: float = 0.0
    inlier_points2d: np.ndarray | None = None
    inlier_points3d: np.ndarray | None = None
    detail: str = ''
    map_name: str | None = None
    """The map the pose is in (its manifest name); None when not localized."""


class Relocalizer:
    """
    A scene map loaded for queries.

    >>> reloc = Relocalizer.from_file('kitchen.safetensors', device='cpu')   # doctest: +SKIP
    >>> result = reloc.localize(rgb_u8, K)                                   # doctest: +SKIP
    """

    def __init__(self, manifest, tensors, backbone_weights=None, device='auto', config=None,
                 extractor=None, runtime='auto', threads=0):
        self.manifest = manifest
        self.name = manifest.get('name')
        bb = manifest.get('backbone')
        if not isinstance(bb, dict) or not isinstance(bb.get('name'), str) or not all(
                isinstance(bb.get(k) or '', str) for k in ('weights_sha256', 'weights_path')):
            raise SceneMapError(f'the manifest of map {self.name!r} has no valid backbone '
                                f'entry: the file is damaged or was edited; {REMAKE}')
        if extractor is None:
            weights = backbone_weights or find_weights(bb)
            extractor = FeatureExtractor(bb['name'], weights, device, runtime, threads)
        else:
            weights = extractor.weights_path
        self.extractor = extractor
        if bb.get('weights_sha256') and self.extractor.weights_sha256 != bb['weights_sha256']:
            raise ValueError(
                f'backbone weights {weights} (sha256 {self.extractor.weights_sha256}) are not '
                f'the ones this map was memorized with (sha256 {bb["weights_sha256"]}); pass '
                'the right file with --backbone-weights')
        try:
            self.scene_model = build_scene_model(manifest, tensors, self.extractor.device)
            self.config = config or LocalizerConfig.from_dict(manifest.get('localizer', {}))
        except DAMAGED_FILE_ERRORS as e:
            if is_out_of_memory(e) or isinstance(e, SceneMapError):
                raise
            # The checksums passed (or an old file has no manifest checksum): the manifest was
            # edited and now disagrees with the tensors.
            raise SceneMapError(f'map {self.name!r} does not match its own manifest '
                                f'({type(e).__name__}: {e}): the file is damaged or was '
                                f'edited; {REMAKE}') from e
        self._retrieval_tensors = {k: v for k, v in tensors.items() if k.startswith('retrieval.')}
        self._retrieval = None   # (model, database index), built when first needed

    @classmethod
    def from_file(cls, path, backbone_weights=None, device='auto', config=None, runtime='auto',
                  threads=0):
        """
        Load a map file for queries.

        ``runtime`` (``auto | torch | onnxruntime | onednn``) and ``threads``: how the backbone
        runs (see :class:`~scene_reloc.backbones.FeatureExtractor`).

        :raises SceneMapError: the file is missing, damaged, edited or of another version.
        :raises ValueError: the backbone weights it needs are missing or others (what to do is
            in the message).
        """
        manifest, tensors = load_scene_map(path)
        try:
            return cls(manifest, tensors, backbone_weights, device, config, runtime=runtime,
                       threads=threads)
        except ValueError as e:
            raise with_path(e, path) from e

    @property
    def head_type(self):
        """The map's scene model (``region_classifier``, ``landmark_detector``, ...)."""
        return self.scene_model.head_type

    def map_points(self, name=None):
        """(N, 3) scene points of the map (for markers); ``name`` is ignored (one map)."""
        return self.scene_model.map_points()

    def retrieve(self, features, k=None):
        """Return the memorized frames most like the image (global descriptor), best first."""
        if self._retrieval is None:
            from scene_reloc.retrieval.database import find_model, FrameDatabase
            from scene_reloc.retrieval.index import GlobalIndex
            model = find_model(self.manifest['retrieval'], self.extractor.descriptor_dim,
                               device=self.extractor.device)
            db = FrameDatabase(self._retrieval_tensors)
            self._retrieval = (model, GlobalIndex(db.globals))
        model, index = self._retrieval
        g, _ = model.describe(features.grid_desc)
        _, ids = index.search(g, k or self.config.retrieved_frames)
        return [int(i) for i in ids[0] if i >= 0]

    def features(self, image_rgb_u8):
        """Backbone features of one image, as the scene model asks for them."""
        with no_tf32():
            if self.scene_model.features_needed(self.config) == FEATURES_KEYPOINTS:
                return self.extractor.extract(image_rgb_u8, self.config.max_keypoints)
            return self.extractor.extract_grid(image_rgb_u8)

    def localize(self, image_rgb_u8, K):
        """
        Localize one image.

        :param image_rgb_u8: (H, W, 3) uint8 RGB.
        :param K: (3, 3) intrinsics of that image.
        :return: :class:`RelocResult`; never raises for a bad image, it says why instead.
        """
        t0 = time.perf_counter()
        img, K, problem = prepare_query(image_rgb_u8, K)
        if problem:
            return RelocResult(False, BAD_INPUT, detail=problem)
        return self.localize_features(self.features(img), K, img.shape[:2], t0)

    def localize_features(self, features, K, image_hw, t0=None):
        """
        Localize one image from its backbone features (a site shares them among its maps).

        :param features: :class:`~scene_reloc.backbones.ImageFeatures` with what
            :meth:`features` gives (keypoints included when the scene model asks for them).
        :param image_hw: (height, width) of the image.
        :param t0: ``time.perf_counter()`` when the query started (for ``seconds``).
        """
        t0 = time.perf_counter() if t0 is None else t0
        K = np.asarray(K, dtype=np.float64)
        H, W = image_hw
        with no_tf32():
            frames = self.retrieve(features) if self.config.retrieved_frames > 0 else None
            corr = self.scene_model.correspondences(features, (H, W), self.config, frames)
        p2, p3, weights = corr.points2d, corr.points3d, corr.weights
        n = len(p2)
        if n < max(4, self.config.min_inliers):
            return RelocResult(False, TOO_FEW_CORRESPONDENCES, num_correspondences=n,
                               seconds=time.perf_counter() - t0,
                               detail=f'{n} correspondences, need {self.config.min_inliers}')
        sol = solve_pnp(p2, p3, K, (W, H), self.config.pnp,
                        weights if self.config.weighted_pnp else None, corr.scores)
        dt = time.perf_counter() - t0
        if sol is None:
            return RelocResult(False, RANSAC_FAILED, num_correspondences=n, seconds=dt)
        ni = int(sol.inliers.sum())
        result = RelocResult(False, OK, sol.world_from_cam, sol.covariance, n, ni,
                             sol.reprojection_error_px, dt, p2[sol.inliers], p3[sol.inliers])
        if ni < self.config.min_inliers:
            result.reason = TOO_FEW_INLIERS
            result.detail = f'{ni} inliers < min_inliers {self.config.min_inliers}'
        elif sol.reprojection_error_px > self.config.max_reprojection_error:
            result.reason = REPROJECTION_TOO_HIGH
            result.detail = (f'median reprojection error {sol.reprojection_error_px:.2f} px > '
                             f'{self.config.max_reprojection_error}')
        elif not np.all(np.isfinite(sol.covariance)) or \
                np.linalg.eigvalsh(sol.covariance).max() > 1.0:
            result.reason = DEGENERATE
            result.detail = 'pose is poorly constrained by the inliers (covariance too large)'
        else:
            result.success = True
            result.map_name = self.name
            floor = [self.config.covariance_floor_m ** 2] * 3 + \
                [self.config.covariance_floor_rad ** 2] * 3
            result.covariance = sol.covariance + np.diag(floor)
        if not result.success:
            result.world_from_cam = None
        return result


def find_weights(backbone):
    """Find the weights a map's backbone needs: where it was memorized, else the cache."""
    if not backbone.get('weights_sha256'):
        return None
    for path in (backbone.get('weights_path'), default_weights_path(backbone['name'])):
        if path and os.path.exists(path):
            return path
    raise ValueError(f'this map needs the {backbone["name"]} weights (sha256 '
                     f'{backbone["weights_sha256"][:12]}...): pass --backbone-weights PATH or run '
                     f'scene-reloc fetch-weights {backbone["name"]}')


def prepare_query(image_rgb_u8, K):
    """Return (image array, K float64, problem): the checks every localizer runs first."""
    img = np.asarray(image_rgb_u8)
    K = np.asarray(K, dtype=np.float64)
    return img, K, check_input(img, K)


def check_input(img, K):
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        return f'expected an HxWx3 uint8 RGB image, got {img.dtype} {img.shape}'
    if img.shape[0] < 32 or img.shape[1] < 32:
        return f'image too small: {img.shape[1]}x{img.shape[0]}'
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        return 'intrinsics must be a finite 3x3 matrix with positive focal lengths'
    return ''

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

import numpy as np
import pytest

from scene_reloc.geometry import invert_pose, look_at, pose_error, project, transform_points
from scene_reloc.pnp import PnPConfig, pose_covariance, solve_pnp

K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def scene(rng, n, noise_px=0.0, outliers=0.0):
    world_from_cam = look_at([0.3, -0.2, 1.4], [2.0, 3.0, 1.0])
    cam = np.stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n), rng.uniform(1.5, 4, n)],
                   -1)
    uv, _ = project(cam, K)
    uv += rng.normal(0, noise_px, uv.shape)
    n_out = int(outliers * n)
    uv[:n_out] = rng.uniform([0, 0], [640, 480], (n_out, 2))
    return world_from_cam, uv, transform_points(world_from_cam, cam)


def test_recovers_pose_through_outliers():
    rng = np.random.default_rng(0)
    T, uv, X = scene(rng, 400, noise_px=0.5, outliers=0.6)
    sol = solve_pnp(uv, X, K, (640, 480), PnPConfig())
    t, r = pose_error(sol.world_from_cam, T)
    assert t < 0.01 and r < 0.3
    assert sol.inliers[240:].mean() > 0.95 and sol.inliers[:240].mean() < 0.1
    assert sol.reprojection_error_px < 1.5


def test_ransac_on_the_best_scored_subset_recollects_inliers_among_all():
    """RANSAC sees only the best-scored correspondences; the pose and inliers use all of them."""
    rng = np.random.default_rng(4)
    T, uv, X = scene(rng, 1000, noise_px=0.5, outliers=0.7)
    good = np.arange(1000) >= 700
    # Similarity ranks good matches higher on average, not perfectly.
    scores = np.where(good, rng.uniform(0.8, 1.0, 1000), rng.uniform(0.75, 0.95, 1000))
    full = solve_pnp(uv, X, K, (640, 480), PnPConfig())
    sub = solve_pnp(uv, X, K, (640, 480), PnPConfig(ransac_subset=150), scores=scores)
    for sol in (full, sub):
        t, r = pose_error(sol.world_from_cam, T)
        assert t < 0.01 and r < 0.3
    assert sub.inliers.sum() > 280                   # far more than the 150 RANSAC saw
    assert sub.inliers[good].mean() > 0.95 and sub.inliers[~good].mean() < 0.05
    assert (sub.inliers != full.inliers).sum() <= 3     # the same least-squares pose, nearly
    assert np.abs(sub.world_from_cam - full.world_from_cam).max() < 1e-3
    # Without scores the setting changes nothing (no order to take the best from).
    same = solve_pnp(uv, X, K, (640, 480), PnPConfig(ransac_subset=150))
    assert same.inliers.sum() == full.inliers.sum()


def test_too_few_points_is_none():
    assert solve_pnp(np.zeros((3, 2)), np.zeros((3, 3)), K, (640, 480)) is None


def test_covariance_matches_monte_carlo_spread():
    """The Gauss-Newton covariance predicts how much the pose varies with pixel noise."""
    rng = np.random.default_rng(1)
    T, uv0, X = scene(rng, 150)
    samples, covs = [], []
    for _ in range(60):
        uv = uv0 + rng.normal(0, 1.0, uv0.shape)
        sol = solve_pnp(uv, X, K, (640, 480), PnPConfig(max_reproj_error=6.0))
        # Left perturbation about the world axes: R_est = exp([d_theta]) R_true.
        dR = sol.world_from_cam[:3, :3] @ T[:3, :3].T
        d_theta = 0.5 * np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]])
        samples.append(np.concatenate([sol.world_from_cam[:3, 3] - T[:3, 3], d_theta]))
        covs.append(sol.covariance)
    emp = np.var(np.array(samples), axis=0)
    pred = np.mean([np.diag(c) for c in covs], axis=0)
    ratio = pred / emp
    assert np.all(ratio > 0.5) and np.all(ratio < 2.0), ratio


def test_covariance_is_symmetric_positive_and_residuals_are_reprojection_errors():
    rng = np.random.default_rng(2)
    T, uv, X = scene(rng, 200, noise_px=1.0)
    cov, res = pose_covariance(T, uv, X, K)
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.isclose(np.median(res), np.median(np.linalg.norm(
        project(transform_points(invert_pose(T), X), K)[0] - uv, axis=1)))


def test_ransac_stopping_rule_and_seed_reach_poselib_and_both_rules_find_the_pose(monkeypatch):
    import scene_reloc.pnp as pnp
    rng = np.random.default_rng(1)
    T, uv, X = scene(rng, 400, noise_px=0.5, outliers=0.6)
    seen = []
    estimate = pnp.poselib.estimate_absolute_pose

    def spy(p2, p3, camera, ransac, bundle):
        pose, info = estimate(p2, p3, camera, ransac, bundle)
        seen.append((ransac['dyn_num_trials_mult'], ransac['seed'], info['iterations']))
        return pose, info

    monkeypatch.setattr(pnp.poselib, 'estimate_absolute_pose', spy)
    for mult in (3.0, 1.0):
        for seed in (0, 7):
            sol = solve_pnp(uv, X, K, (640, 480), PnPConfig(trials_mult=mult, seed=seed))
            t, r = pose_error(sol.world_from_cam, T)
            assert t < 0.01 and r < 0.3
    assert [s[:2] for s in seen] == [(3.0, 0), (3.0, 7), (1.0, 0), (1.0, 7)]
    # The textbook rule (1) stops after fewer trials than poselib's default (3).
    assert max(s[2] for s in seen[2:]) < min(s[2] for s in seen[:2])
    again = solve_pnp(uv, X, K, (640, 480), PnPConfig(seed=7))
    assert seen[-1] == seen[1]   # a seed repeats its run exactly
    assert np.allclose(again.world_from_cam, solve_pnp(uv, X, K, (640, 480),
                                                       PnPConfig(seed=7)).world_from_cam)


def test_maps_keep_the_newer_pnp_settings_out_unless_they_are_used():
    from scene_reloc.relocalizer import LocalizerConfig
    plain = LocalizerConfig().to_dict()
    # A map that does not use them stays readable by a node from before them.
    assert 'trials_mult' not in plain['pnp'] and 'seed' not in plain['pnp']
    assert plain['pnp']['ransac_subset'] == 1000
    assert LocalizerConfig.from_dict(plain) == LocalizerConfig()
    tuned = LocalizerConfig(pnp=PnPConfig(trials_mult=1.0, seed=4))
    d = tuned.to_dict()
    assert (d['pnp']['trials_mult'], d['pnp']['seed']) == (1.0, 4)
    assert LocalizerConfig.from_dict(d) == tuned
    for bad in ({'seed': -1}, {'trials_mult': 0.0}):
        with pytest.raises(ValueError, match='seed must be >= 0 and trials_mult > 0'):
            LocalizerConfig.from_dict({'pnp': bad})

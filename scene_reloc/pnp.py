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
Absolute pose from 2D-3D correspondences: PnP + RANSAC with poselib, and a 6x6 covariance.

The covariance follows ROS' PoseWithCovariance convention: (x, y, z, rot_x, rot_y, rot_z) of the
camera in the world frame, rotations as small angles about the world axes (a left perturbation
``R' = exp([d_theta]) R``). It is the Gauss-Newton estimate ``sigma^2 (J^T J)^-1`` over the
inliers, with sigma^2 the inliers' residual variance.
"""

from dataclasses import dataclass

import numpy as np
import poselib

from scene_reloc.geometry import invert_pose


@dataclass
class PnPConfig:
    """RANSAC and refinement settings."""

    max_reproj_error: float = 4.0
    """RANSAC inlier threshold in pixels."""
    max_iterations: int = 10000
    """RANSAC iterations at most."""
    min_iterations: int = 100
    """RANSAC iterations at least."""
    success_prob: float = 0.9999
    """Stop when an all-inlier sample has been drawn with this probability."""
    ransac_subset: int = 1000
    """RANSAC on only this many best-scored correspondences (0: all of them); the inliers are
    then re-collected among all (``refine_rounds``). Cheaper when the scores rank the good
    matches first, as descriptor similarity does (region maps give 1400-1900 correspondences
    at 2048 keypoints: 1000 kept the recall and median on a validation split of the kitchen
    and cut the p95 latency by a third; 500 lost a frame of 60)."""
    trials_mult: float = 3.0
    """Factor on the number of trials that ``success_prob`` asks for (poselib's
    ``dyn_num_trials_mult``, same default). 1 is the textbook rule: 1.3-2.0x faster PnP (p90
    1.6-2.4x) on the kitchen's maps, with no significant loss on the validation split (+3 / -5
    queries of 720, p = 0.73) but a loss on the benchmark's queries (+1 / -9 of 828, p = 0.02,
    mostly the landmark detector's dev-10 map), so 3 stays (``bench/bench_pnp.py``)."""
    seed: int = 0
    """RANSAC's random seed (poselib's; fixed, so a query's result is repeatable)."""
    refine_rounds: int = 4
    """After RANSAC: rounds of re-collecting the inliers among all correspondences under the
    current pose and refining on them (DSAC*-style), until the inlier set stops changing."""


@dataclass
class PnPSolution:
    world_from_cam: np.ndarray
    inliers: np.ndarray           # (N,) bool
    reprojection_error_px: float  # median over the inliers
    covariance: np.ndarray        # (6, 6)


def _skew(v):
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _project(world_from_cam, points3d, K):
    """Pixels (N, 2) of world points and their depth (N,) in the camera."""
    Xc = (points3d - world_from_cam[:3, 3]) @ world_from_cam[:3, :3]
    Z = Xc[:, 2]
    return np.stack([K[0, 0] * Xc[:, 0] / Z + K[0, 2], K[1, 1] * Xc[:, 1] / Z + K[1, 2]], -1), Z


def _residuals_and_jacobian(world_from_cam, points2d, points3d, K):
    """Reprojection residuals (N, 2) and their Jacobian (2N, 6) in the module's convention."""
    R, t = world_from_cam[:3, :3], world_from_cam[:3, 3]
    d = points3d - t
    Xc = d @ R  # R^T (X - t), row-wise
    Z = Xc[:, 2]
    uv = np.stack([K[0, 0] * Xc[:, 0] / Z + K[0, 2], K[1, 1] * Xc[:, 1] / Z + K[1, 2]], -1)
    res = uv - points2d
    n = len(points2d)
    dproj = np.zeros((n, 2, 3))
    dproj[:, 0, 0] = K[0, 0] / Z
    dproj[:, 0, 2] = -K[0, 0] * Xc[:, 0] / Z ** 2
    dproj[:, 1, 1] = K[1, 1] / Z
    dproj[:, 1, 2] = -K[1, 1] * Xc[:, 1] / Z ** 2
    # dXc/dt = -R^T ; dXc/dtheta = R^T [X - t]_x
    dXc = np.zeros((n, 3, 6))
    dXc[:, :, :3] = -R.T
    skew = np.zeros((n, 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -d[:, 2], d[:, 1], -d[:, 0]
    skew[:, 1, 0], skew[:, 2, 0], skew[:, 2, 1] = d[:, 2], -d[:, 1], d[:, 0]
    dXc[:, :, 3:] = np.einsum('ij,njk->nik', R.T, skew)
    return res, np.einsum('nij,njk->nik', dproj, dXc).reshape(2 * n, 6)


def pose_covariance(world_from_cam, points2d, points3d, K, weights=None):
    """
    Gauss-Newton covariance of the camera pose (see module docstring).

    With ``weights`` (N,) (relative confidences), it is ``sigma^2 (J^T W J)^-1`` with the
    weighted residual variance.

    :return: ((6, 6) covariance, (N,) reprojection error norms in pixels).
    """
    res, J = _residuals_and_jacobian(world_from_cam, points2d, points3d, K)
    n = len(points2d)
    w = np.ones(n) if weights is None else np.asarray(weights, float) / np.mean(weights)
    w2 = np.repeat(w, 2)
    dof = max(2 * n - 6, 1)
    sigma2 = float((w2 * res.ravel() ** 2).sum() / dof)
    JtJ = J.T @ (J * w2[:, None])
    try:
        cov = sigma2 * np.linalg.inv(JtJ)
    except np.linalg.LinAlgError:
        cov = np.full((6, 6), np.inf)
    return cov, np.linalg.norm(res, axis=1)


def refine_weighted(world_from_cam, points2d, points3d, K, weights, iterations=10, tol=1e-9):
    """
    Weighted Gauss-Newton refinement of world_from_cam (left perturbation, as above).

    Stops when a step moves the pose by less than ``tol`` (metres / radians): from a RANSAC
    pose it converges in 2-4 steps.
    """
    T = world_from_cam.copy()
    w2 = np.repeat(np.asarray(weights, float) / np.mean(weights), 2)
    for _ in range(iterations):
        res, J = _residuals_and_jacobian(T, points2d, points3d, K)
        try:
            delta = np.linalg.solve(J.T @ (J * w2[:, None]), -J.T @ (w2 * res.ravel()))
        except np.linalg.LinAlgError:
            break
        theta = delta[3:]
        angle = np.linalg.norm(theta)
        if angle > 1e-12:
            k = _skew(theta / angle)
            dR = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
            T[:3, :3] = dR @ T[:3, :3]
        T[:3, 3] += delta[:3]
        if np.linalg.norm(delta) < tol:
            break
    return T


def recollect_inliers(world_from_cam, inliers, points2d, points3d, K, cfg, weights=None):
    """
    Re-collect the inliers among all correspondences and refine the pose on them.

    ``cfg.refine_rounds`` times or until the set stops changing (RANSAC's inliers were counted
    under a pose fitted to a minimal sample; the refined pose usually admits more).

    :return: (world_from_cam, inliers).
    """
    for _ in range(cfg.refine_rounds):
        uv, cam_z = _project(world_from_cam, points3d, K)
        new = (np.linalg.norm(uv - points2d, axis=1) < cfg.max_reproj_error) & (cam_z > 0)
        if new.sum() < 6 or np.array_equal(new, inliers):
            break
        inliers = new
        w = np.ones(int(new.sum())) if weights is None else weights[new]
        world_from_cam = refine_weighted(world_from_cam, points2d[new], points3d[new], K, w)
    return world_from_cam, inliers


def solve_pnp(points2d, points3d, K, image_size, cfg=PnPConfig(), weights=None, scores=None):
    """
    Estimate world_from_cam with poselib's LO-RANSAC + bundle refinement.

    :param points2d: (N, 2) pixels; :param points3d: (N, 3) world points.
    :param image_size: (width, height).
    :param weights: optional (N,) confidences: the inliers' pose is then refined by weighted
        Gauss-Newton and the covariance weighted alike (poselib takes no weights).
    :return: :class:`PnPSolution`, or ``None`` when RANSAC finds no model.
    """
    points2d = np.ascontiguousarray(points2d, dtype=np.float64)
    points3d = np.ascontiguousarray(points3d, dtype=np.float64)
    if len(points2d) < 4:
        return None
    camera = {'model': 'PINHOLE', 'width': int(image_size[0]), 'height': int(image_size[1]),
              'params': [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}
    ransac = {'max_reproj_error': cfg.max_reproj_error, 'max_iterations': cfg.max_iterations,
              'min_iterations': cfg.min_iterations, 'success_prob': cfg.success_prob,
              'dyn_num_trials_mult': cfg.trials_mult, 'seed': cfg.seed}
    order = np.arange(len(points2d))
    if scores is not None and 0 < cfg.ransac_subset < len(points2d):
        order = np.argsort(-np.asarray(scores), kind='stable')[:cfg.ransac_subset]
    pose, info = poselib.estimate_absolute_pose(points2d[order], points3d[order], camera,
                                                ransac, {})
    inliers = np.zeros(len(points2d), dtype=bool)
    got = np.asarray(info.get('inliers', []), dtype=bool)
    if got.shape == order.shape:
        inliers[order[got]] = True
    if inliers.sum() < 4:
        return None
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = pose.R
    cam_from_world[:3, 3] = pose.t
    world_from_cam = invert_pose(cam_from_world)
    w_all = None if weights is None else np.asarray(weights, dtype=np.float64)
    if weights is not None:
        world_from_cam = refine_weighted(world_from_cam, points2d[inliers], points3d[inliers],
                                         K, w_all[inliers])
    world_from_cam, inliers = recollect_inliers(world_from_cam, inliers, points2d, points3d, K,
                                                cfg, w_all)
    w = None if w_all is None else w_all[inliers]
    cov, err = pose_covariance(world_from_cam, points2d[inliers], points3d[inliers], K, w)
    return PnPSolution(world_from_cam, inliers, float(np.median(err)), cov)

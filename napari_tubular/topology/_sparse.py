"""Sparse helpers on voxel coordinate lists (26-neighbour pairs, lengths). Internal."""

from __future__ import annotations

import itertools

import numpy as np

# the 13 "forward" offsets of the 26-neighbourhood: each unordered neighbour pair once
FORWARD_OFFSETS = np.array(
    [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)], dtype=np.int64
)


def linear_index(coords: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Linear index of (N, 3) voxel coordinates in a grid padded by one voxel on every side."""
    c = np.asarray(coords, dtype=np.int64) + 1
    sy, sx = shape[1] + 2, shape[2] + 2
    return (c[:, 0] * sy + c[:, 1]) * sx + c[:, 2]


def neighbour_pairs(
    coords: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All unordered 26-neighbour pairs among voxel coordinates.

    Args:
        coords: int, shape (N, 3), distinct (z, y, x) voxel indices inside ``shape``.
        shape: grid shape (Z, Y, X).

    Returns:
        ``(i, j, k)``: int64 arrays, pair ``(coords[i], coords[j])`` with ``coords[j] - coords[i]
        == FORWARD_OFFSETS[k]``.
    """
    n = len(coords)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    lin = linear_index(coords, shape)
    order = np.argsort(lin, kind="stable")
    sorted_lin = lin[order]
    sy, sx = shape[1] + 2, shape[2] + 2
    out_i, out_j, out_k = [], [], []
    for k, (dz, dy, dx) in enumerate(FORWARD_OFFSETS):
        target = lin + (dz * sy + dy) * sx + dx
        pos = np.searchsorted(sorted_lin, target)
        pos[pos == n] = 0
        hit = np.flatnonzero(sorted_lin[pos] == target)
        out_i.append(hit)
        out_j.append(order[pos[hit]])
        out_k.append(np.full(hit.size, k, dtype=np.int64))
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_k)


def step_lengths_mm(spacing: tuple[float, float, float]) -> np.ndarray:
    """Physical length (mm) of each of the 13 forward 26-neighbour steps."""
    return np.sqrt(((FORWARD_OFFSETS * np.asarray(spacing, dtype=np.float64)) ** 2).sum(axis=1))

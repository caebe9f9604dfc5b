"""Evaluate models on CT-like sections of a body with contrast-filled vessels (prints tables).

    python scripts/body_phantoms.py [--model default|PATH ...] [--set dev|test] [--n 8]
        [--out DIR] [--save DIR]

An audit found the default model labelling large parts of the soft tissue of a body phantom as
vessel (air outside an elliptical body, a fat shell, 40 HU tissue: 178 mL predicted for 6 mL of
vessels). The training generator (``napari_tubular.synthetic``) never makes a body outline, so
its held-out set cannot show this. This script renders its volumes with code of its own,
written independently of ``synthetic.py`` and of ``scripts/foreign_phantoms.py``: a section of
a torso or a limb as a CT scan shows it, in Hounsfield units.

* Body: a cross-section ellipse with its axis along z (the first array axis), a slightly
  irregular outline (low harmonics of the polar angle, drifting slowly with z), off-centre. A
  "limb" (semi-axes 26-45 mm, centred within 15 % of the field of view's centre) is often cut
  by the field of view; a "torso" (semi-axes 95-170 mm) always is, its outline crossing the
  field of view between 10 and 90 % of the half width from the centre, so that air is visible
  on one side. The layers are found with a 2-D distance map per slice on a grid padded by
  24 mm in-plane (an outline just outside the field of view still gives its fat shell).
* Layers: air -1000 HU; skin 1-2 mm (10-50 HU); subcutaneous fat 3-20 mm thick, varying
  around the body (-120..-80 HU); soft tissue 30-60 HU inside, with a smooth texture of 3-8 HU.
  Inside: one or two large organs (ellipsoids of 12-35 mm semi-axes with a warped outline,
  55-70 HU, or in some cases an enhancing organ at 100-150 HU); optional intermuscular fat
  planes (warped sheets 1-3 mm thick) and fat lobules; in some cases a bone (a cylinder near
  the z axis, radius 6-12 mm: cortical ring 1.5-4 mm at 700-1000 HU around marrow at 250-350 HU).
* Vessels: 2-6 smooth curved tubes, some with one branch, drawn inside the body's interior
  (beyond the fat shell, clear of the bone): a centreline in 0.25 mm steps whose curvature is
  a smoothly varying (Ornstein-Uhlenbeck) vector, radius of curvature >= 12 mm; it steers away
  (radius of curvature 6 mm) when 4 mm ahead would leave the interior, and ends where it
  cannot or after 25 mm of such steering (no coils; in limbs the tubes start along the body
  axis); radius 0.8-6 mm tapering linearly; contrast 150-350 HU above the soft tissue (per
  vessel). Label = voxel centres within the radius of the nearest centreline point of a tube;
  image = partial-volume occupancy from a 3 x 3 x 3 supersampling of the voxels on the tube
  surface.
* Acquisition: a Gaussian blur of 0.5-1.2 voxel per axis (slice profile included), noise of
  8-25 HU with a slight correlation (white noise smoothed by 0.6 voxel, rescaled), values
  clipped at -1024. Spacings (0.8, 0.8, 0.8), (1, 1, 1), (1.5, 0.8, 0.8), (2.5, 0.7, 0.7),
  (0.6, 0.6, 0.6) mm in turn; field of view 70-110 mm per axis with at most one axis above
  89 mm (the default model's 64-voxel window at 0.8 mm then needs 8-12 windows: CPU time) and
  at most 2.5 M voxels.
* Case kinds by index: ``i % 4 == 0``: the image min-max scaled to [0, 1], as users export
  volumes (``intensity='auto'`` must rescale it); ``i % 4 == 1``: no vessels at all (empty
  label: only the false-positive volume is reported). So ``--n 8`` has two of each and ``--n
  2`` one of each.

Two sets of seeds: ``dev`` (7000 + i) and ``test`` (9000 + i). Per model and case: Dice /
clDice / Betti-0 error of the labels ``napari-tubular segment`` writes (refinement with the
model's tuned T_p/T_r, speck filter) and of ``segment --no-refine`` (``P > 0.5`` + speck
filter), from the same network output, and for both the false-positive volume (mL): predicted
voxels farther than 2 mm from every true vessel voxel, the number the body failure shows in. A
second table says where the false positives of the ``segment`` labels lie: which tissue
(soft tissue, organ, enhancing organ, fat/skin, bone, air), the share within 3 mm of fat or
air, the share within 3 voxels of a face of the volume and the median distance (mm) of the
false positives from fat or air.
``--bare``: the cases without subcutaneous fat and skin, the soft tissue straight against the
air, as a limb, a lean patient or a hand-made phantom looks; the vessels may then come within
their radius + 0.5 mm of the outline. The same options and body outline, but organs, fat
planes, bone and vessels are placed in the larger interior, so they differ from the set's
cases: compare means, not cases.
``--save DIR`` writes the cases as NIfTI (``DIR/images``, ``DIR/labels``, ``DIR/tissues``:
0 air, 1 skin, 2 subcutaneous fat, 3 soft tissue, 4 organ, 5 enhancing organ, 6 inner fat,
7 cortical bone, 8 marrow) for the CLI.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# the command line, the NIfTI writer and the model run are foreign_phantoms.py's; the
# generators stay apart
sys.path.insert(0, str(Path(__file__).resolve().parent))
from foreign_phantoms import (  # noqa: E402
    phantom_parser,
    prepare_cases,
    segment_both,
    write_results,
)

SEEDS = {"dev": 7000, "test": 9000}
SPACINGS = [(0.8, 0.8, 0.8), (1.0, 1.0, 1.0), (1.5, 0.8, 0.8), (2.5, 0.7, 0.7), (0.6, 0.6, 0.6)]
FOV_RANGE_MM = (70.0, 110.0)
FOV_SHORT_MM = 89.0  # the other axes: 2 windows of 64 voxels at 0.8 mm (with 25 % overlap)
MAX_VOXELS = 2_500_000
PAD_MM = 24.0  # in-plane padding for the body layers (thickest fat shell 20 mm)
OUTSIDE_MM = 10.0  # how far a centreline may run beyond the field of view
STEP_MM = 0.25
LOOK_AHEAD_MM = 4.0  # a centreline steers away from fat, air and bone this far ahead
MAX_CURVATURE = 1 / 6.0  # 1/mm, while steering
MAX_STEERED_MM = 25.0  # a centreline ends after steering away along this length in all
FP_MARGIN_MM = 2.0
NEAR_FAT_MM = 3.0
FACE_VOXELS = 3

AIR, SKIN, FAT, SOFT, ORGAN, ENHANCING, INNER_FAT, CORTEX, MARROW = range(9)
FP_GROUPS = {
    "soft": (SOFT,),
    "organ": (ORGAN,),
    "enh. organ": (ENHANCING,),
    "fat/skin": (SKIN, FAT, INNER_FAT),
    "bone": (CORTEX, MARROW),
    "air": (AIR,),
}


def case_options(i: int, set_name: str = "dev", bare: bool = False) -> dict:
    """The random options of case ``i`` of a set (geometry, tissues, vessels, acquisition);
    ``bare``: no subcutaneous fat and skin (tissue straight against air)."""
    seed = SEEDS[set_name] + i
    rng = np.random.default_rng([31, seed])
    sp = SPACINGS[i % len(SPACINGS)]
    long_axis = int(rng.integers(0, 3))
    fov = [float(rng.uniform(FOV_RANGE_MM[0], FOV_RANGE_MM[1] if ax == long_axis
                             else FOV_SHORT_MM)) for ax in range(3)]
    shape = [int(round(f / s)) for f, s in zip(fov, sp)]
    shrink = min(1.0, (MAX_VOXELS / np.prod(shape)) ** (1 / 3))
    shape = tuple(int(n * shrink) for n in shape)
    limb = bool(rng.random() < 0.3)
    opts = {
        "seed": seed,
        "spacing": sp,
        "shape": shape,
        "units": "unit" if i % 4 == 0 else "hu",
        "n_vessels": 0 if i % 4 == 1 else int(rng.integers(2, 7)),
        "body": "limb" if limb else "torso",
        "fat_mm": float(rng.uniform(3.0, 20.0) if not limb else rng.uniform(3.0, 12.0)),
        "soft_hu": float(rng.uniform(30.0, 60.0)),
        "n_organs": int(rng.integers(1, 3)),
        "enhancing": bool(rng.random() < 0.35),
        "fat_planes": int(rng.integers(0, 4)),
        "bone": bool(rng.random() < (0.7 if limb else 0.35)),
        "blur": float(rng.uniform(0.5, 1.2)),
        "noise": float(rng.uniform(8.0, 25.0)),
    }
    if bare:  # the options drawn all the same: the other options are the set's
        opts.update(fat_mm=0.0, bare=True)
    return opts


def smooth_field(shape, spacing, sigma_mm: float, rng) -> np.ndarray:
    """A smooth random field of unit standard deviation (made on a 4x coarser grid)."""
    from scipy import ndimage

    coarse = tuple(max(2, -(-n // 4)) for n in shape)
    f = ndimage.gaussian_filter(rng.normal(size=coarse),
                                [sigma_mm / (4 * s) for s in spacing], mode="wrap")
    f = ndimage.zoom(f, [n / c for n, c in zip(shape, coarse)], order=1, grid_mode=True,
                     mode="grid-wrap")
    out = np.zeros(shape, np.float32)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(shape, f.shape))
    out[sl] = f[sl]
    return (out - out.mean()) / (out.std() + 1e-9)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


class Body:
    """The body section: outline, fat shell and the interior clearance, on a padded grid."""

    def __init__(self, o: dict, rng):
        from scipy import ndimage

        sp = np.asarray(o["spacing"], float)
        shape = np.asarray(o["shape"])
        ext = shape * sp
        self.sp = sp
        self.pad = np.array([int(np.ceil(OUTSIDE_MM / sp[0])) + 1,
                             int(np.ceil(PAD_MM / sp[1])), int(np.ceil(PAD_MM / sp[2]))])
        half = ext[1:] / 2
        if o["body"] == "limb":
            a = rng.uniform(26.0, 45.0)
            b = a * rng.uniform(0.75, 1.0)
            centre = half + rng.uniform(-0.15, 0.15, 2) * ext[1:]
        else:
            a = rng.uniform(95.0, 170.0)
            b = a * rng.uniform(0.55, 0.8)
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        if o["body"] == "torso":
            # put the outline, along a random direction u, at a point e of the field of view
            phi = rng.uniform(0, 2 * np.pi)
            u = np.array([np.cos(phi), np.sin(phi)])
            e = half + rng.uniform(0.1, 0.9) * half.min() * u
            w = rot @ u
            reach = 1.0 / np.sqrt((w[0] / a) ** 2 + (w[1] / b) ** 2)
            centre = e - reach * u
        harm = [(k, rng.uniform(0, 0.035) / np.sqrt(k - 1), rng.uniform(0, 2 * np.pi),
                 rng.uniform(-1, 1) / 60.0) for k in range(2, 7)]
        fat_mod = (rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.12),
                   rng.uniform(0, 2 * np.pi))
        skin_mm = rng.uniform(1.0, 2.0)
        if o.get("bare"):
            skin_mm = 0.0  # drawn all the same: the same body outline
        breath = (rng.uniform(0, 0.02), rng.uniform(40, 120), rng.uniform(0, 2 * np.pi))

        nz = shape[0] + 2 * self.pad[0]
        ny, nx = shape[1:] + 2 * self.pad[1:]
        y = (np.arange(ny) - self.pad[1]) * sp[1] - centre[0]
        x = (np.arange(nx) - self.pad[2]) * sp[2] - centre[1]
        yy, xx = np.meshgrid(y, x, indexing="ij")
        uu = rot[0, 0] * yy + rot[0, 1] * xx
        vv = rot[1, 0] * yy + rot[1, 1] * xx
        theta = np.arctan2(vv / b, uu / a)
        rho = np.sqrt((uu / a) ** 2 + (vv / b) ** 2)
        fat_t = o["fat_mm"] * (1 + fat_mod[0] * np.cos(theta - fat_mod[1])
                               + fat_mod[2] * np.cos(2 * theta - fat_mod[3]))
        self.layers = np.zeros((nz, ny, nx), np.uint8)  # AIR, SKIN, FAT, SOFT (interior)
        self.clearance = np.zeros((nz, ny, nx), np.float32)  # mm to fat or air, in-plane
        for k in range(nz):
            z = (k - self.pad[0]) * sp[0]
            outline = 1.0 + sum(c * np.cos(m * theta + p + w * z) for m, c, p, w in harm)
            outline = outline * (1 + breath[0] * np.sin(2 * np.pi * z / breath[1] + breath[2]))
            body = rho <= outline
            depth = ndimage.distance_transform_edt(body, sampling=sp[1:])
            lay = np.where(body, SOFT, AIR).astype(np.uint8)
            lay[body & (depth < fat_t)] = FAT
            lay[body & (depth < skin_mm)] = SKIN
            self.layers[k] = lay
            inner = lay == SOFT
            if inner.any():
                self.clearance[k] = ndimage.distance_transform_edt(inner, sampling=sp[1:])
        self.bone = None

    def crop(self, arr):
        p = self.pad
        return arr[p[0]:arr.shape[0] - p[0], p[1]:arr.shape[1] - p[1], p[2]:arr.shape[2] - p[2]]

    def room(self, pts_mm, radius) -> np.ndarray:
        """Clearance (mm) left around a tube of ``radius`` at the points: > 0 = fits."""
        idx = np.rint(np.atleast_2d(pts_mm) / self.sp).astype(int) + self.pad
        idx = np.clip(idx, 0, np.asarray(self.clearance.shape) - 1)
        room = self.clearance[idx[:, 0], idx[:, 1], idx[:, 2]] - radius - 0.5
        if self.bone is not None:
            c, d, r_out = self.bone
            q = np.atleast_2d(pts_mm) - c
            dist = np.linalg.norm(q - np.outer(q @ d, d), axis=1)
            room = np.minimum(room, dist - r_out - radius - 1.0)
        return room


def grow_tube(body: Body, start, direction, r0: float, r1: float, length: float, ext, rng):
    """Centreline points and radii of one smooth tube (stops where it cannot go on)."""
    p = np.asarray(start, float)
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    curv = np.zeros(3)
    decay = np.exp(-STEP_MM / 20.0)
    sigma = 0.025 * np.sqrt(1 - decay ** 2)
    n = int(length / STEP_MM)
    pts, rads = [], []
    steered = 0.0
    for k in range(n):
        r = r0 + (r1 - r0) * k / n
        curv = decay * curv + rng.normal(scale=sigma, size=3)
        curv -= (curv @ d) * d
        norm = np.linalg.norm(curv)
        if norm > 1 / 12.0:  # radius of curvature >= 12 mm, except when steering away
            curv *= (1 / 12.0) / norm
        nd = d + STEP_MM * curv
        nd /= np.linalg.norm(nd)
        if body.room(p + LOOK_AHEAD_MM * nd, r)[0] < 0:
            # steer (at the largest curvature) towards the roomiest of a few directions ahead
            cands = nd + rng.normal(scale=0.7, size=(16, 3))
            cands /= np.linalg.norm(cands, axis=1, keepdims=True)
            best = cands[int(np.argmax(body.room(p + LOOK_AHEAD_MM * cands, r)))]
            steer = best - (best @ d) * d
            curv = steer / (np.linalg.norm(steer) + 1e-9) * MAX_CURVATURE
            nd = d + STEP_MM * curv
            nd /= np.linalg.norm(nd)
            steered += STEP_MM
            if steered > MAX_STEERED_MM:  # no coiling up inside a small section
                break
        q = p + STEP_MM * nd
        if body.room(q, r)[0] < 0:
            break
        if np.any(q < -OUTSIDE_MM) or np.any(q > ext + OUTSIDE_MM):
            break
        d, p = nd, q
        pts.append(p)
        rads.append(r)
    return np.asarray(pts).reshape(-1, 3), np.asarray(rads)


def make_vessels(body: Body, o: dict, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(points mm, radii mm)]`` of the trunks and branches, inside the body's interior."""
    sp = np.asarray(o["spacing"], float)
    ext = (np.asarray(o["shape"]) - 1) * sp
    inner = np.argwhere(body.crop(body.clearance) > 1.5)
    tubes = []
    for _ in range(o["n_vessels"]):
        for _try in range(30):
            r0 = rng.uniform(1.2, 6.0)
            r1 = max(0.8, r0 * rng.uniform(0.35, 0.9))
            if len(inner) == 0:
                break
            start = inner[rng.integers(len(inner))] * sp
            if body.room(start, r0)[0] < 0.5:
                continue
            if o["body"] == "limb" or rng.random() < 0.5:  # along the body axis
                d = np.array([rng.choice([-1.0, 1.0]), *rng.normal(scale=0.35, size=2)])
            else:
                d = rng.normal(size=3)
            pts, rads = grow_tube(body, start, d, r0, r1, rng.uniform(50, 150), ext, rng)
            inside = np.all((pts >= 0) & (pts <= ext), axis=1)
            if inside.sum() * STEP_MM < 15.0:
                continue
            tubes.append((pts, rads))
            if rng.random() < 0.4 and len(pts) > 80:
                k = int(rng.uniform(0.2, 0.7) * len(pts))
                rb = max(0.8, rads[k] * rng.uniform(0.4, 0.75))
                tang = pts[min(k + 1, len(pts) - 1)] - pts[max(k - 1, 0)]
                tang /= np.linalg.norm(tang) + 1e-9
                side = rng.normal(size=3)
                side -= (side @ tang) * tang
                side /= np.linalg.norm(side) + 1e-9
                ang = np.deg2rad(rng.uniform(30, 70))
                db = np.cos(ang) * tang + np.sin(ang) * side
                bp, br = grow_tube(body, pts[k], db, rb, max(0.8, rb * 0.6),
                                   rng.uniform(20, 60), ext, rng)
                if len(bp) > 20:
                    tubes.append((np.vstack([pts[k:k + 1], bp]), np.concatenate([[rb], br])))
            break
    return tubes


def render_tubes(tubes, shape, spacing):
    """(label bool, [occupancy float32 per tube]) on the voxel grid."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    sp = np.asarray(spacing, float)
    shape = tuple(int(s) for s in shape)
    label = np.zeros(shape, bool)
    occs = []
    if not tubes:
        return label, occs
    rmax = max(float(r.max()) for _, r in tubes)
    hd = 0.5 * float(np.linalg.norm(sp))
    pad = np.ceil((rmax + 2 * hd) / sp).astype(int) + 1
    marks = np.ones(tuple(np.asarray(shape) + 2 * pad), bool)
    for pts, _ in tubes:
        idx = np.rint(pts / sp).astype(int) + pad
        ok = np.all((idx >= 0) & (idx < marks.shape), axis=1)
        marks[tuple(idx[ok].T)] = False
    near = ndimage.distance_transform_edt(marks, sampling=sp)
    near = near[pad[0]:pad[0] + shape[0], pad[1]:pad[1] + shape[1], pad[2]:pad[2] + shape[2]]
    cand = np.argwhere(near <= rmax + 2 * hd + STEP_MM)
    cand_mm = cand * sp
    offs = np.stack(np.meshgrid(*[np.array([-1, 0, 1]) * s / 3 for s in sp], indexing="ij"),
                    -1).reshape(-1, 3)
    for pts, rads in tubes:
        tree = cKDTree(pts)
        d, j = tree.query(cand_mm, distance_upper_bound=float(rads.max()) + 2 * hd)
        hit = np.isfinite(d)
        j = np.minimum(j, len(pts) - 1)
        inside = hit & (d <= rads[j])
        occ = np.zeros(shape, np.float32)
        ci = cand[inside]
        label[tuple(ci.T)] = True
        occ[tuple(ci.T)] = 1.0
        edge = hit & (np.abs(d - rads[j]) < hd)
        if edge.any():
            sub = (cand_mm[edge][:, None, :] + offs[None]).reshape(-1, 3)
            ds, js = tree.query(sub)
            frac = (ds <= rads[js]).reshape(-1, len(offs)).mean(1)
            occ[tuple(cand[edge].T)] = frac
        occs.append(occ)
    return label, occs


def body_case(o: dict):
    """(image float32 in HU or [0, 1], label uint8, tissue classes uint8) of one case."""
    from scipy import ndimage

    rng = np.random.default_rng(o["seed"])
    sp = np.asarray(o["spacing"], float)
    shape = tuple(o["shape"])
    body = Body(o, rng)
    tissue = body.crop(body.layers).copy()
    interior = tissue == SOFT
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij"),
                    -1).astype(np.float32)
    warp = smooth_field(shape, sp, 6.0, rng)
    texture = smooth_field(shape, sp, rng.uniform(2.0, 5.0), rng)
    inner = np.argwhere(interior)
    n_blobs = o["n_organs"] + int(rng.random() < 0.4)
    for k in range(n_blobs if len(inner) else 0):
        c = inner[rng.integers(len(inner))] * sp
        semi = rng.uniform(12.0, 35.0, 3) if k < o["n_organs"] else rng.uniform(5.0, 14.0, 3)
        q = (grid - c.astype(np.float32)) @ random_rotation(rng).astype(np.float32)
        f = np.sqrt(((q / semi.astype(np.float32)) ** 2).sum(-1)) + 0.15 * warp
        kind = INNER_FAT if k >= o["n_organs"] else (
            ENHANCING if o["enhancing"] and k == 0 else ORGAN)
        tissue[(f < 1) & interior] = kind
    for _ in range(o["fat_planes"]):
        c = inner[rng.integers(len(inner))] * sp if len(inner) else sp * shape / 2
        nrm = np.array([rng.normal(scale=0.3), *rng.normal(size=2)])
        nrm /= np.linalg.norm(nrm)
        f = (grid - c.astype(np.float32)) @ nrm.astype(np.float32) + rng.uniform(2, 6) * warp
        plane = (np.abs(f) < rng.uniform(0.5, 1.5)) & (tissue == SOFT)
        tissue[plane] = INNER_FAT
    if o["bone"]:
        r_out = rng.uniform(6.0, 12.0)
        ok = np.argwhere(body.crop(body.clearance) > r_out + 4)
        if len(ok):
            c = ok[rng.integers(len(ok))] * sp
            d = np.array([1.0, *rng.normal(scale=0.15, size=2)])
            d /= np.linalg.norm(d)
            q = grid - c.astype(np.float32)
            dist = np.linalg.norm(q - (q @ d.astype(np.float32))[..., None] * d, axis=-1)
            cortex = rng.uniform(1.5, 4.0)
            inside = ~np.isin(tissue, (AIR, SKIN, FAT))  # a tilted bone stays in the body
            tissue[(dist <= r_out) & inside] = CORTEX
            tissue[(dist <= r_out - cortex) & inside] = MARROW
            body.bone = (c, d, r_out)
    del grid
    tubes = make_vessels(body, o, rng)
    label, occs = render_tubes(tubes, shape, sp)

    soft = o["soft_hu"]
    hu = np.zeros(9, np.float32)
    hu[[AIR, SKIN, FAT, SOFT]] = -1000.0, rng.uniform(10, 50), rng.uniform(-120, -80), soft
    hu[ORGAN] = max(rng.uniform(55, 70), soft + 5)
    hu[ENHANCING] = rng.uniform(100, 150)
    hu[INNER_FAT] = hu[FAT] + rng.uniform(-10, 10)
    hu[CORTEX], hu[MARROW] = rng.uniform(700, 1000), rng.uniform(250, 350)
    img = hu[tissue]
    amp = rng.uniform(3.0, 8.0)
    tex_scale = np.array([0, 0.5, 0.5, 1, 1, 1, 0.5, 0.3, 0.5], np.float32) * amp
    img += tex_scale[tissue] * texture
    for occ in occs:
        v = soft + rng.uniform(150, 350)
        img = img * (1 - occ) + v * occ
    img = ndimage.gaussian_filter(img, o["blur"])
    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 0.6)
    img += noise * (o["noise"] / (noise.std() + 1e-9))
    img = np.maximum(img, -1024.0)
    if o["units"] == "unit":
        img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32), label.astype(np.uint8), tissue


def make_set(set_name: str, n: int, bare: bool = False) -> list[dict]:
    cases = []
    for i in range(n):
        o = case_options(i, set_name, bare)
        img, lab, tissue = body_case(o)
        cases.append({"name": f"{set_name}{i}", "options": o, "image": img, "label": lab,
                      "tissue": tissue})
    return cases


def fp_analysis(pred, label, tissue, spacing) -> dict:
    """False-positive volume (mL: predicted voxels > 2 mm from every true vessel voxel) and
    where it lies (share per tissue group, within 3 mm of fat/air, within 3 voxels of a face)."""
    from scipy import ndimage

    sp = np.asarray(spacing, float)
    if label.any():
        far = ndimage.distance_transform_edt(label == 0, sampling=sp) > FP_MARGIN_MM
    else:
        far = np.ones(label.shape, bool)
    fp = (pred > 0) & far
    n = int(np.count_nonzero(fp))
    out = {"fp_ml": n * float(np.prod(sp)) / 1000.0,
           "pred_ml": int(np.count_nonzero(pred)) * float(np.prod(sp)) / 1000.0}
    if n == 0:
        return out
    cls = tissue[fp]
    out["where"] = {g: float(np.isin(cls, ks).mean()) for g, ks in FP_GROUPS.items()}
    fatty = np.isin(tissue, (AIR, SKIN, FAT, INNER_FAT))
    depth = (ndimage.distance_transform_edt(~fatty, sampling=sp)[fp] if fatty.any()
             else np.full(n, np.inf))
    out["where"]["near fat/air"] = float((depth <= NEAR_FAT_MM).mean())
    out["fp_depth_mm"] = float(np.median(depth))
    face = np.zeros(label.shape, bool)
    for ax in range(3):
        sl = [slice(None)] * 3
        sl[ax] = slice(0, FACE_VOXELS)
        face[tuple(sl)] = True
        sl[ax] = slice(label.shape[ax] - FACE_VOXELS, None)
        face[tuple(sl)] = True
    out["where"]["faces"] = float(face[fp].mean())
    return out


def evaluate_model(model, cases, log=print) -> list[dict]:
    from napari_tubular.topology.metrics import compute_metrics

    rows = []
    for c in cases:
        t = time.perf_counter()
        sp = c["options"]["spacing"]
        res, no_refine = segment_both(c["image"], sp, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = {"case": c["name"], "options": c["options"],
                   "true_ml": int(c["label"].sum()) * float(np.prod(sp)) / 1000.0,
                   "messages": [str(m) for m in res.report.get("messages", [])]}
            for key, mask in (("segment", res.labels > 0), ("no_refine", no_refine)):
                m = compute_metrics(mask, c["label"] > 0, sp)
                vals = {k: float(m[k]) for k in ("dice", "cldice", "b0_error")}
                if not c["label"].any():  # vessel-free: only the false positives count
                    vals["dice"] = vals["cldice"] = None
                vals.update(fp_analysis(mask, c["label"], c["tissue"], sp))
                row[key] = vals
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        s, n = row["segment"], row["no_refine"]
        log(f"  {c['name']}: segment Dice {_f(s['dice'])} FP {s['fp_ml']:.1f} mL, no-refine "
            f"Dice {_f(n['dice'])} FP {n['fp_ml']:.1f} mL ({row['seconds']:.0f} s)")
    return rows


def _f(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _mean(rows, key: str, metric: str, vessels: bool = True):
    vals = [r[key][metric] for r in rows if (r["true_ml"] > 0) == vessels]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def summary(rows) -> dict:
    out = {}
    for k in ("segment", "no_refine"):
        out[k] = {m: _mean(rows, k, m) for m in ("dice", "cldice", "b0_error", "fp_ml",
                                                 "pred_ml")}
        out[k]["fp_ml_vessel_free"] = _mean(rows, k, "fp_ml", vessels=False)
    return out


def _describe(o: dict) -> str:
    extras = [f"{o['n_organs']} organ" + ("s" if o["n_organs"] > 1 else "")]
    if o["enhancing"]:
        extras.append("enhancing")
    if o["fat_planes"]:
        extras.append(f"{o['fat_planes']} fat planes")
    if o["bone"]:
        extras.append("bone")
    return ", ".join(extras)


def case_table(rows) -> str:
    lines = ["| case | spacing mm | shape | units | body (fat mm) | tissue | true mL | "
             "`segment` Dice / clDice / b0 | pred mL | FP mL | "
             "`--no-refine` Dice / clDice / b0 | FP mL | s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        o, s, n = r["options"], r["segment"], r["no_refine"]
        lines.append(
            f"| {r['case']} | {'x'.join(f'{v:g}' for v in o['spacing'])} | "
            f"{'x'.join(str(v) for v in o['shape'])} | {o['units']} | "
            f"{o['body']} ({o['fat_mm']:.0f}) | {_describe(o)} | {r['true_ml']:.1f} | "
            f"{_f(s['dice'])} / {_f(s['cldice'])} / {s['b0_error']:.0f} | {s['pred_ml']:.1f} | "
            f"{s['fp_ml']:.1f} | {_f(n['dice'])} / {_f(n['cldice'])} / {n['b0_error']:.0f} | "
            f"{n['fp_ml']:.1f} | {r['seconds']:.0f} |")
    m = summary(rows)
    s, n = m["segment"], m["no_refine"]
    true_ml = [r["true_ml"] for r in rows if r["true_ml"] > 0]
    lines.append(
        f"| mean (vessels) | | | | | | {_f(np.mean(true_ml) if true_ml else None, '.1f')}"
        f" | {_f(s['dice'])} / {_f(s['cldice'])} / {_f(s['b0_error'], '.1f')} | "
        f"{_f(s['pred_ml'], '.1f')} | {_f(s['fp_ml'], '.1f')} | {_f(n['dice'])} / "
        f"{_f(n['cldice'])} / {_f(n['b0_error'], '.1f')} | {_f(n['fp_ml'], '.1f')} | |")
    lines.append(f"| mean (vessel-free) | | | | | | 0 | | | "
                 f"{_f(s['fp_ml_vessel_free'], '.1f')} | | "
                 f"{_f(n['fp_ml_vessel_free'], '.1f')} | |")
    return "\n".join(lines)


def where_table(rows) -> str:
    keys = [*FP_GROUPS, "near fat/air", "faces"]
    lines = ["| case | FP mL | " + " | ".join(f"{k} %" for k in keys) + " | median mm from "
             "fat/air |", "| --- | --- | " + " | ".join("---" for _ in keys) + " | --- |"]
    for r in rows:
        s = r["segment"]
        w = s.get("where")
        cells = [f"{100 * w[k]:.0f}" if w else "-" for k in keys]
        lines.append(f"| {r['case']} | {s['fp_ml']:.1f} | " + " | ".join(cells)
                     + f" | {_f(s.get('fp_depth_mm'), '.1f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = phantom_parser(__doc__, SEEDS, 8, "body.json / body.md")
    parser.add_argument("--bare", action="store_true",
                        help="the same cases without subcutaneous fat and skin: soft tissue "
                        "straight against the air")
    args = parser.parse_args(argv)
    models = args.model or ["default"]
    cases = prepare_cases(args, functools.partial(make_set, bare=args.bare),
                          (("images", "image"), ("labels", "label"), ("tissues", "tissue")))
    results, sections = {}, []
    for name in models:
        print(name)
        t = time.perf_counter()
        rows = evaluate_model(name, cases)
        results[name] = {"cases": rows, "mean": summary(rows),
                         "seconds": time.perf_counter() - t}
        sections.append(f"### {name}\n\n{case_table(rows)}\n\nWhere the false positives of "
                        f"the `segment` labels lie (share of the FP volume):\n\n"
                        f"{where_table(rows)}")
    lines = ["| model | `segment` Dice / clDice / b0 | FP mL | FP mL, no vessels | "
             "`--no-refine` Dice / clDice / b0 | FP mL | FP mL, no vessels | s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        s, n = r["mean"]["segment"], r["mean"]["no_refine"]
        lines.append(
            f"| {name} | {_f(s['dice'])} / {_f(s['cldice'])} / {_f(s['b0_error'], '.1f')} | "
            f"{_f(s['fp_ml'], '.1f')} | {_f(s['fp_ml_vessel_free'], '.1f')} | "
            f"{_f(n['dice'])} / {_f(n['cldice'])} / {_f(n['b0_error'], '.1f')} | "
            f"{_f(n['fp_ml'], '.1f')} | {_f(n['fp_ml_vessel_free'], '.1f')} | "
            f"{r['seconds']:.0f} |")
    table = "\n".join(lines)
    text = "\n\n".join(sections)
    print(f"\n{text}\n\n'{args.set}' set{' (bare)' if args.bare else ''}, {len(cases)} "
          f"volumes (means: Dice / clDice / b0 and "
          f"FP over the cases with vessels; 'no vessels' over the vessel-free ones):\n{table}")
    write_results(args.out, "body", results, f"# Body phantoms ('{args.set}' set"
                                              f"{', bare' if args.bare else ''})\n\n{text}\n\n"
                                              f"## Means\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

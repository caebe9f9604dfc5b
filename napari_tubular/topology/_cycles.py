"""Short non-trivial cycles of a skeleton graph: one ring around each tunnel. Internal.

Voxels are closed unit cubes; two cubes meet when their voxels are 26-neighbours, and any set of
pairwise 26-neighbours fits in a 2 x 2 x 2 block (per axis their coordinates differ by at most
one), so all of a clique's cubes share a lattice point. By the nerve theorem the union of the
skeleton's cubes is therefore homotopy-equivalent to the clique complex of its 26-neighbour
graph, and a graph cycle is topologically trivial exactly when, over GF(2), its edges are a sum
of triangle boundaries (three pairwise neighbours). :func:`short_loops` uses that:

1. Strong collapse: a voxel all of whose neighbours are also neighbours of one of them (it is
   dominated) is removed; the clique complex of what is left has the same homotopy type
   (Barmak and Minian 2012). Dangling branches, corner voxels of a staircase and flat sheets
   go; rings, junctions and closed surfaces (around a cavity) stay.
2. The rest is contracted to branch voxels joined by chains (a chain's length in mm is the sum
   of its steps).
3. H1 coordinates: the chains off a spanning tree are the cycle space's coordinates; the
   remaining triangle boundaries are relations among them. Those of one or two terms (``a =
   0``, ``a = b``: most, on a closed surface around a cavity, as when it is peeled along a
   dual tree) merge coordinates with union-find, again until none is left; the rest are
   eliminated over GF(2) (Python ints as bit sets). Each chain's reduced vector is its class,
   so a cycle's class is the XOR of its chains' classes.
4. Candidates as in Horton (1987) and Erickson and Whittlesey (2005): for every branch voxel
   ``r`` and chain ``(u, v)``, the shortest path ``r -> u``, the chain and the shortest path
   ``v -> r`` (their classes computed for a block of roots at once; trivial ones, and all but
   the shortest of each class, dropped). Taken shortest first when their class is independent
   of those taken: a shortest homology basis, so each loop is the smallest ring around its own
   tunnel. A ring the caller knows to be trivial where it matters (the mask fills it, while
   the skeleton does not: what a thinning leaves in a thick part) is not taken, and its class
   is set aside, so that the next independent ring is taken instead.

Bounds: on graphs of more than :data:`MAX_ROOTS` branch voxels a spread subset of roots (a
closed surface around a cavity: its rings are found a little longer, not lost); more than
:data:`MAX_COORDINATES` coordinates left after the union-find, or an elimination of more than
:data:`MAX_XORS` steps, and :func:`short_loops` declines (None).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from ._sparse import neighbour_pairs

#: GF(2) elimination of the triangles left after the collapse: at most this many XORs of bit
#: sets (a closed surface of thousands of voxels around a cavity); beyond, None is returned
MAX_XORS = 2_000_000
#: shortest-path roots per block of :func:`short_loops` (bounds the distance matrices' memory)
_ROOT_BLOCK = 256
#: H1 coordinates before the elimination (chains off the spanning tree, merged by the triangles
#: of one or two terms) at most: the elimination's bit sets take about their square over 8
#: bytes (20,000: 50 MB); beyond, None is returned
MAX_COORDINATES = 20_000
#: shortest-path roots of :func:`short_loops` at most (a spread subset beyond)
MAX_ROOTS = 256
#: candidates kept across root blocks (the shortest; those of the first root are all kept, so
#: a basis is always complete)
_MAX_CANDIDATES = 500_000


def _adjacency(n: int, ei: np.ndarray, ej: np.ndarray) -> list[set]:
    adj: list[set] = [set() for _ in range(n)]
    for a, b in zip(ei.tolist(), ej.tolist()):
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    return adj


def _strong_collapse(adj: list[set], pinned=frozenset()) -> None:
    """Remove dominated vertices (in place) until none is left: ``v`` with a neighbour ``u``
    adjacent to all of ``v``'s other neighbours. ``pinned``: vertices kept whatever."""
    queue = deque(range(len(adj)))
    queued = [True] * len(adj)
    alive = len(adj)
    while queue and alive > 1:
        v = queue.popleft()
        queued[v] = False
        nv = adj[v]
        if not nv or v in pinned:
            continue  # an isolated vertex is a component of its own: kept
        if not any(len(adj[u]) + 1 >= len(nv) and nv - {u} <= adj[u] for u in nv):
            continue
        for w in nv:
            adj[w].discard(v)
            if not queued[w]:
                queued[w] = True
                queue.append(w)
        adj[v] = set()
        alive -= 1


def _chains(adj: list[set], alive: list[int], pos_mm: np.ndarray):
    """Branch vertices and the chains of degree-2 vertices between them.

    Returns ``(branch, chains)``: the branch vertices (degree other than 2; one vertex of a
    component that is a single ring) and per chain ``(a, b, vertices a..b, length mm)``."""
    is_branch = {v: len(adj[v]) != 2 for v in alive}
    seen_pairs: set = set()
    chains = []
    visited: set = set()

    def walk(a, first):
        path = [a, first]
        prev, cur = a, first
        while not is_branch[cur]:
            x, y = adj[cur]
            prev, cur = cur, (y if x == prev else x)
            path.append(cur)
        return path

    def add(path):
        key = (min(path[0], path[1]), max(path[0], path[1])) if len(path) == 2 else None
        if key is not None:
            if key in seen_pairs:
                return
            seen_pairs.add(key)
        else:
            inner = path[1]
            if inner in visited:
                return
        visited.update(path[1:-1])
        chains.append((path[0], path[-1], path))

    for a in alive:
        if is_branch[a]:
            for b in adj[a]:
                add(walk(a, b))
    # components that are single rings (every vertex of degree 2): one vertex made a branch
    for a in alive:
        if not is_branch[a] and a not in visited:
            is_branch[a] = True
            first = next(iter(adj[a]))
            add(walk(a, first))
    branch = [v for v in alive if is_branch[v]]
    # lengths: the steps of all chains at once
    flat = np.concatenate([c[2] for c in chains]) if chains else np.zeros(0, dtype=np.int64)
    first = np.cumsum([0] + [len(c[2]) for c in chains])[:-1]
    step = np.zeros(flat.size)
    step[1:] = np.linalg.norm(np.diff(pos_mm[flat], axis=0), axis=1)
    step[first] = 0.0  # no step from one chain's last vertex to the next chain's first
    lengths = np.add.reduceat(step, first) if chains else step
    return branch, [(a, b, path, float(w)) for (a, b, path), w in zip(chains, lengths)]


def _reduce(x: int, basis: dict, budget: list) -> int:
    """``x`` reduced by ``basis`` (highest bit -> vector with that highest bit); its pivots
    cleared. ``budget[0]``: XORs left (goes negative when spent)."""
    out = 0
    while x:
        h = x.bit_length() - 1
        b = basis.get(h)
        if b is None:
            out |= 1 << h
            x ^= 1 << h
        else:
            x ^= b
            budget[0] -= 1
            if budget[0] < 0:
                return 0
    return out


def _insert(x: int, basis: dict) -> bool:
    """Add ``x`` to an echelon ``basis`` when independent of it; whether it was."""
    while x:
        h = x.bit_length() - 1
        b = basis.get(h)
        if b is None:
            basis[h] = x
            return True
        x ^= b
    return False


def short_loops(coords: np.ndarray, ei: np.ndarray, ej: np.ndarray, spacing, max_loops: int,
                trivial=None, max_xors: int = MAX_XORS) -> list[np.ndarray] | None:
    """Up to ``max_loops`` short cycles whose classes are independent in H1 of the clique
    complex of a 26-neighbour voxel graph (see the module docstring), shortest first.

    Args:
        coords: int, shape (N, 3), the graph's voxels (z, y, x).
        ei, ej: int, shape (E,), its edges (26-neighbour pairs) as indices into ``coords``.
        spacing: voxel size in mm, (dz, dy, dx): lengths of steps and cycles.
        max_loops: at most this many cycles.
        trivial: optional ``f(cycle) -> bool``: a cycle known to be trivial where it matters
            (the mask fills it): not taken, and its class is not counted either (the next
            independent cycle is taken instead).
        max_xors: budget of the GF(2) elimination (:data:`MAX_XORS`).

    Returns:
        The cycles as index arrays into ``coords`` (each a closed path, its vertices in order),
        as many as the graph's ``b1`` up to ``max_loops``; None when the elimination would
        exceed its budget.
    """
    n = len(coords)
    if n == 0 or max_loops <= 0:
        return []
    pos = np.asarray(coords, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    adj = _adjacency(n, np.asarray(ei), np.asarray(ej))
    _strong_collapse(adj)
    alive = [v for v in range(n) if adj[v]]
    if len(alive) < 3:
        return []
    branch, chains = _chains(adj, alive, pos)
    m = len(branch)
    local = {v: k for k, v in enumerate(branch)}
    ca = np.array([local[c[0]] for c in chains], dtype=np.int64)
    cb = np.array([local[c[1]] for c in chains], dtype=np.int64)
    cw = np.array([c[3] for c in chains], dtype=np.float64)
    # the shortest chain per pair of branch vertices: the graph Dijkstra walks
    best: dict = {}
    for k, (a, b) in enumerate(zip(ca.tolist(), cb.tolist())):
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        if key not in best or cw[k] < cw[best[key]]:
            best[key] = k
    is_best = np.zeros(len(chains), dtype=bool)
    is_best[list(best.values())] = True
    keys = np.array(list(best.keys()), dtype=np.int64).reshape(-1, 2)
    kw = cw[list(best.values())]
    mat = coo_matrix((np.concatenate([kw, kw]), (np.concatenate([keys[:, 0], keys[:, 1]]),
                                                 np.concatenate([keys[:, 1], keys[:, 0]]))),
                     shape=(m, m)).tocsr()

    # H1 coordinates: a spanning forest's chains are 0, each other chain a unit vector, reduced
    # modulo the boundaries of the triangles left
    # (the collapse keeps the homotopy type: one connected graph; a forest all the same)
    in_tree = np.zeros(len(chains), dtype=bool)
    reached = np.zeros(m, dtype=bool)
    for root in range(m):
        if reached[root]:
            continue
        dist0, pred0 = dijkstra(mat, indices=root, return_predecessors=True)
        fresh = np.flatnonzero(np.isfinite(dist0) & ~reached)
        reached[fresh] = True
        for v in fresh.tolist():
            p = int(pred0[v])
            if p >= 0:
                in_tree[best[(min(p, v), max(p, v))]] = True
    nontree = np.flatnonzero(~in_tree)
    var_of = np.full(len(chains), -1, dtype=np.int64)
    var_of[nontree] = np.arange(nontree.size)
    # the triangles' relations among the chains off the tree (each at most three)
    triangles = []
    direct = {key: k for key, k in best.items() if len(chains[k][2]) == 2}
    for (a, b), k in direct.items():
        common = adj[branch[a]] & adj[branch[b]]
        for c in common:
            lc = local.get(c)
            if lc is None or lc <= b:
                continue  # each triangle once (a < b < c); its vertices are branch vertices
            vs = [int(var_of[q]) for q in (k, direct[(a, lc)], direct[(b, lc)]) if var_of[q] >= 0]
            if vs:
                triangles.append(vs)
    # relations of one or two terms first, with union-find (``a = 0``, ``a = b``: no fill, as
    # peeling a surface along a dual tree), until none is left; the rest by elimination
    zero = nontree.size
    parent = list(range(zero + 1))

    def find(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    pending = triangles
    while True:
        rest = []
        for vs in pending:
            z = find(zero)
            odd: set = set()
            for v in vs:
                r = find(v)
                if r != z:
                    odd ^= {r}
            if len(odd) == 1:
                parent[odd.pop()] = z
            elif len(odd) == 2:
                r1, r2 = odd
                parent[r1] = r2
            elif odd:
                rest.append(vs)
        if len(rest) == len(pending):
            break
        pending = rest
    z = find(zero)
    roots = sorted({find(v) for v in range(zero)} - {z})
    bit = len(roots)
    if bit > MAX_COORDINATES:
        return None
    coordinate = {r: q for q, r in enumerate(roots)}

    def unit(v: int) -> int:
        r = find(v)
        return 0 if r == z else 1 << coordinate[r]

    budget = [int(max_xors)]
    relations: dict = {}
    for vs in pending:
        x = 0
        for v in vs:
            x ^= unit(v)
        x = _reduce(x, relations, budget)
        if budget[0] < 0:
            return None
        if x:
            relations[x.bit_length() - 1] = x
    # each chain's class in the coordinates left free by the triangles: rank bits, as words
    free = [q for q in range(bit) if q not in relations]
    rank = len(free)
    want = min(int(max_loops), rank)
    if want <= 0:
        return []
    words = (rank + 63) // 64
    compact = {q: c for c, q in enumerate(free)}
    cls = np.zeros((len(chains), words), dtype=np.uint64)
    for k in nontree.tolist():
        x = _reduce(unit(int(var_of[k])), relations, budget)
        if budget[0] < 0:
            return None
        while x:
            h = x.bit_length() - 1
            c = compact[h]
            cls[k, c // 64] |= np.uint64(1) << np.uint64(c % 64)
            x ^= 1 << h
    # the chain of each tree step (p -> v), looked up by pair
    pair_keys = keys[:, 0] * m + keys[:, 1]
    order_keys = np.argsort(pair_keys)
    pair_keys = pair_keys[order_keys]
    pair_chain = np.asarray(list(best.values()), dtype=np.int64)[order_keys]

    def step_chain(p: np.ndarray, v: np.ndarray) -> np.ndarray:
        lin = np.minimum(p, v) * m + np.maximum(p, v)
        return pair_chain[np.clip(np.searchsorted(pair_keys, lin), 0, len(pair_keys) - 1)]

    # candidates: (root r, chain k from a to b) -> d(r, a) + w_k + d(r, b), with its class (the
    # XOR of the classes along the two tree paths and the chain's); trivial ones dropped here
    block_size = int(max(1, min(_ROOT_BLOCK, 1_000_000 // (max(m, len(chains), 1) * words))))
    kept_l, kept_r, kept_k, kept_x = [], [], [], []
    arange_m = np.arange(m)
    # every branch vertex a root on small graphs; else a spread subset (raster order), with the
    # first vertex, whose tree's fundamental cycles span everything: a closed surface around a
    # cavity has thousands of branch vertices, and any ring of it passes near some root
    roots = np.arange(m)
    if m > MAX_ROOTS:
        roots = np.unique(np.linspace(0, m - 1, MAX_ROOTS).astype(np.int64))
    for start in range(0, roots.size, block_size):
        block = roots[start:start + block_size]
        dist, pred = dijkstra(mat, indices=block, return_predecessors=True)
        # class of the tree path root -> v, by pointer jumping
        up = np.where(pred < 0, arange_m[None, :], pred).astype(np.int64)
        to = np.zeros((len(block), m, words), dtype=np.uint64)
        has = pred >= 0
        to[has] = cls[step_chain(pred[has], np.broadcast_to(arange_m, pred.shape)[has])]
        rows = np.arange(len(block))[:, None]
        while True:
            nxt = up[rows, up]
            if np.array_equal(nxt, up):
                break
            to ^= to[rows, up]
            up = nxt
        to ^= to[rows, up]  # the last jump (to the root, whose own class is 0)
        length = dist[:, ca] + cw[None, :] + dist[:, cb]
        x = to[:, ca] ^ cls[None, :, :] ^ to[:, cb]
        ok = np.isfinite(length) & x.any(axis=2)
        r_i, k = np.nonzero(ok)
        kept_l.append(length[r_i, k])
        kept_r.append(block[r_i])
        kept_k.append(k)
        kept_x.append(x[r_i, k])
        if sum(v.size for v in kept_l) > 2 * _MAX_CANDIDATES:
            al, ar, ak, ax = (np.concatenate(v) for v in (kept_l, kept_r, kept_k, kept_x))
            keep = (ar == 0) | (al <= np.partition(al, _MAX_CANDIDATES)[_MAX_CANDIDATES])
            kept_l, kept_r, kept_k, kept_x = [al[keep]], [ar[keep]], [ak[keep]], [ax[keep]]
    all_l, all_r, all_k, all_x = (np.concatenate(v) for v in (kept_l, kept_r, kept_k, kept_x))
    order = np.lexsort((all_k, all_r, all_l))
    # a candidate of the same class as a shorter one is dependent on what was taken by then:
    # the first of each class is enough (the rings around one tunnel from all their roots)
    _, first = np.unique(all_x[order], axis=0, return_index=True)
    order = order[np.sort(first)]

    tree_of: dict[int, np.ndarray] = {}

    def path_to(r: int, v: int) -> list[int]:
        if r not in tree_of:
            tree_of[r] = dijkstra(mat, indices=r, return_predecessors=True)[1]
        pred = tree_of[r]
        out = [v]
        while v != r:
            v = int(pred[v])
            out.append(v)
        return out[::-1]  # r .. v

    chosen: list[np.ndarray] = []
    basis: dict = {}
    for idx in order.tolist():
        x = 0
        for w, word in enumerate(all_x[idx].tolist()):
            x |= int(word) << (64 * w)
        if not _insert(x, basis):
            continue
        r, k = int(all_r[idx]), int(all_k[idx])
        ring = _cycle_vertices(r, int(ca[k]), int(cb[k]), k, path_to, chains, best, branch)
        if trivial is None or not trivial(ring):
            chosen.append(ring)
        # else: its class is taken out (a ring of the skeleton the mask fills; what the
        # thinning leaves of a thick part): the next independent one is looked for instead
        if len(chosen) == want or len(basis) == rank:
            break
    return chosen


def _cycle_vertices(r, a, b, k, path_to, chains, best, branch) -> np.ndarray:
    """The closed vertex path of candidate (root ``r``, chain ``k`` from ``a`` to ``b``): the
    two tree paths without their common start, joined by the chain."""
    pa, pb = path_to(r, a), path_to(r, b)
    s = 0
    while s + 1 < min(len(pa), len(pb)) and pa[s + 1] == pb[s + 1]:
        s += 1
    pa, pb = pa[s:], pb[s:]  # both from their last common vertex

    def expand(path):
        out: list[int] = []
        for p, q in zip(path[:-1], path[1:]):
            c = chains[best[(min(p, q), max(p, q))]]
            verts = c[2] if c[0] == branch[p] else c[2][::-1]
            out.extend(verts[:-1])
        return out

    ring = expand(pa)
    c = chains[k]
    verts = c[2] if c[0] == branch[a] else c[2][::-1]
    ring.extend(verts[:-1])  # a .. before b
    back = expand(pb)  # lca .. b without b
    back.append(branch[pb[-1]])
    ring.extend(back[::-1][:-1])  # b .. after lca
    return np.asarray(ring, dtype=np.int64)


#: :func:`bounds_locally`: at most this many voxels in the patch
MAX_PATCH_VOXELS = 729


def bounds_locally(mask: np.ndarray, ring: np.ndarray) -> bool:
    """Whether a closed 26-path of voxels of ``mask`` (``ring``, (K, 3) in order) bounds in the
    clique complex of the mask's voxels within its bounding box grown by one voxel (then it is
    trivial in the whole mask): exact, on patches of at most :data:`MAX_PATCH_VOXELS` voxels
    (False beyond). The patch is strongly collapsed with the ring's voxels kept, then the ring's
    edges are reduced by the remaining triangles' boundaries over GF(2)."""
    lo = np.maximum(ring.min(axis=0) - 1, 0)
    hi = np.minimum(ring.max(axis=0) + 2, mask.shape)
    patch = mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    if patch.size > MAX_PATCH_VOXELS and int(patch.sum()) > MAX_PATCH_VOXELS:
        return False
    coords = np.argwhere(patch)
    index = {c: k for k, c in enumerate(map(tuple, coords.tolist()))}
    try:
        ids = [index[tuple(v)] for v in (ring - lo).tolist()]
    except KeyError:
        return False  # a ring voxel outside the mask
    ei, ej, _ = neighbour_pairs(coords, patch.shape)
    adj = _adjacency(len(coords), ei, ej)
    _strong_collapse(adj, pinned=frozenset(ids))
    eid: dict = {}
    for a in range(len(adj)):
        for b in adj[a]:
            if a < b:
                eid[(a, b)] = len(eid)
    basis: dict = {}
    for (a, b), e in eid.items():
        for c in adj[a] & adj[b]:
            if c > b:
                _insert((1 << e) ^ (1 << eid[(a, c)]) ^ (1 << eid[(b, c)]), basis)
    x = 0
    for a, b in zip(ids, ids[1:] + ids[:1]):
        e = eid.get((min(a, b), max(a, b)))
        if e is None:
            return False
        x ^= 1 << e
    return not _insert(x, basis)

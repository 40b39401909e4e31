"""Kernel maps: which input site feeds which output site through which weight, by sorted keys.

Each ``(batch, x, y, z)`` row is packed into one int64 key, row-major over a bounding box padded by a
margin, so that the key of ``p + offset`` is ``key(p) + delta(offset)``. One sort of the input keys,
then per kernel column ``(dx, dy)`` one `torch.searchsorted` of all output sites at once (the dz
neighbours are the next sorted keys) give all pairs; no Python loop runs over points. Where the sites
fill enough of their box (indoor scans), a dense table over the box in lattice cells of the stride
(`unsup3d.sparse.grid_table`) answers each offset with one read instead, with the same pairs in the
same order. A submanifold
map searches half the columns (the pairs of ``-d`` are those of ``d`` swapped); a kernel-2 stride-2
downsampling needs no search at all. Maps are cached on the tensor, keyed as torchsparse's (input
stride, kernel size, conv stride, dilation), and a transposed convolution reads its downsampling's.

Convention (MinkowskiEngine, torchsparse 2.0): for output site ``q`` and weight row ``k`` the input site
is ``q + kernel_offsets(kernel_size, dilation)[k] * input_stride``; a strided convolution's output sites
are the unique ``floor(c / S) * S`` with ``S = input_stride * stride``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unsup3d.sparse.grid_table import build_table
from unsup3d.sparse.tensor import SparseTensor, make_ntuple

__all__ = [
    "KernelMap",
    "KeyPacking",
    "SortedCoords",
    "build_kernel_map",
    "downsample_coords",
    "get_kernel_map",
    "get_transposed_kernel_map",
    "kernel_offsets",
    "sorted_coords",
]

_MAX_KEY = 2**62


def kernel_offsets(kernel_size: int | Sequence[int], dilation: int | Sequence[int] = 1,
                   device: torch.device | str | None = None) -> Tensor:
    """Offset `(K, 3)` int32 of each row of a convolution weight, in torchsparse's order.

    Per axis the offsets are ``arange(-k // 2 + 1, k // 2 + 1) * dilation`` (3 -> -1..1, 2 -> 0..1,
    4 -> -1..2); with an odd kernel volume x varies fastest, with an even one z does (torchsparse keeps
    both for MinkowskiEngine's weight layout).
    """
    ks = make_ntuple(kernel_size, 3)
    dil = make_ntuple(dilation, 3)
    if min(ks) <= 0 or min(dil) <= 0:
        raise ValueError(f"kernel_offsets: kernel_size {ks} and dilation {dil} must be positive")
    axes = [torch.arange(-k // 2 + 1, k // 2 + 1, dtype=torch.int32) * d for k, d in zip(ks, dil)]
    volume = ks[0] * ks[1] * ks[2]
    if volume % 2 == 1:
        gz, gy, gx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    else:
        gx, gy, gz = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], dim=1).to(device)


@dataclass(frozen=True)
class KeyPacking:
    """Row-major packing of ``(b, x, y, z)`` into int64 over the box ``lo .. lo + extent - 1``."""

    lo: tuple[int, int, int]
    extent: tuple[int, int, int]

    def encode(self, coords: Tensor) -> Tensor:
        c = coords.long()
        ex, ey, ez = self.extent
        lx, ly, lz = self.lo
        return ((c[:, 0] * ex + (c[:, 1] - lx)) * ey + (c[:, 2] - ly)) * ez + (c[:, 3] - lz)

    def delta(self, offsets: Tensor) -> Tensor:
        o = offsets.long()
        return (o[:, 0] * self.extent[1] + o[:, 1]) * self.extent[2] + o[:, 2]

    def decode(self, keys: Tensor) -> Tensor:
        ex, ey, ez = self.extent
        z = keys % ez
        rest = keys // ez
        y = rest % ey
        rest = rest // ey
        x = rest % ex
        b = rest // ex
        out = torch.stack([b, x + self.lo[0], y + self.lo[1], z + self.lo[2]], dim=1)
        return out.to(torch.int32)


@dataclass
class SortedCoords:
    """The sorted keys of one coordinate set (the stand-in for torchsparse's hash table)."""

    packing: KeyPacking
    bounds: tuple[tuple[int, int, int], tuple[int, int, int]]  # min and max site of the set
    keys: Tensor  # (N,) sorted
    order: Tensor  # (N,) row of each sorted key in the coordinate tensor
    num: int

    def covers(self, lo: Sequence[int], hi: Sequence[int]) -> bool:
        return all(self.packing.lo[a] <= lo[a] and hi[a] < self.packing.lo[a] + self.packing.extent[a]
                   for a in range(3))


def _bounds(coords: Tensor) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    if coords.shape[0] == 0:
        return (0, 0, 0), (0, 0, 0), 0
    mins = coords.amin(dim=0).tolist()
    maxs = coords.amax(dim=0).tolist()
    if mins[0] < 0:
        raise ValueError(f"kernel map: batch indices must be >= 0, got {mins[0]}")
    return (mins[1], mins[2], mins[3]), (maxs[1], maxs[2], maxs[3]), maxs[0] + 1


def sorted_coords(coords: Tensor, margin: Sequence[int] = (0, 0, 0),
                  query_box: tuple[Sequence[int], Sequence[int]] | None = None) -> SortedCoords:
    """Sort the keys of `coords` `(N, 4)`, packed with room for queries `margin` outside their box.

    `query_box` (min, max) widens the box so that sites of another set can be encoded too.
    """
    lo, hi, batches = _bounds(coords)
    if query_box is not None and coords.shape[0] > 0:
        lo = tuple(min(a, b) for a, b in zip(lo, query_box[0]))
        hi = tuple(max(a, b) for a, b in zip(hi, query_box[1]))
    box_lo = tuple(lo[a] - margin[a] for a in range(3))
    extent = tuple(hi[a] - lo[a] + 1 + 2 * margin[a] for a in range(3))
    if max(batches, 1) * extent[0] * extent[1] * extent[2] >= _MAX_KEY:
        raise ValueError(
            f"kernel map: {batches} batch items over a {extent} box do not fit 62-bit keys; "
            f"coordinates span too far (are they voxel indices?)"
        )
    packing = KeyPacking(box_lo, extent)
    keys, order = torch.sort(packing.encode(coords))
    return SortedCoords(packing, (lo, hi), keys, order, coords.shape[0])


def _index_for(x: SparseTensor, margin: Sequence[int]) -> SortedCoords:
    """The sorted keys of `x`'s coordinates, cached per stride, rebuilt when the margin is too small."""
    index = x._caches.hashmaps.get(x.stride)
    if index is not None and index.num == x.coords.shape[0]:
        lo = tuple(index.bounds[0][a] - margin[a] for a in range(3))
        hi = tuple(index.bounds[1][a] + margin[a] for a in range(3))
        if index.covers(lo, hi):
            return index
    index = sorted_coords(x.coords, margin)
    x._caches.hashmaps[x.stride] = index
    return index


@dataclass
class KernelMap:
    """Pairs ``(in_idx[j], out_idx[j])`` grouped by weight row: row `k` owns ``bounds[k]:bounds[k+1]``.

    Row `identity` (the zero offset of a stride-1 map) pairs every site with itself and stores no pairs.
    """

    in_idx: Tensor
    out_idx: Tensor
    bounds: tuple[int, ...]
    n_in: int
    n_out: int
    identity: int
    coords_in: Tensor
    coords_out: Tensor

    @property
    def sizes(self) -> list[int]:
        """Pairs per weight row (the identity row counts all its sites)."""
        sizes = [self.bounds[k + 1] - self.bounds[k] for k in range(len(self.bounds) - 1)]
        if self.identity >= 0:
            sizes[self.identity] = self.n_out
        return sizes

    def pairs(self, k: int) -> tuple[Tensor, Tensor]:
        a, b = self.bounds[k], self.bounds[k + 1]
        return self.in_idx[a:b], self.out_idx[a:b]


def _lookup_columns(index: SortedCoords, queries: Tensor, rows: Tensor,
                    wanted: dict[int, tuple[int, int, int]]) -> dict[int, tuple[Tensor, Tensor]]:
    """For each weight row k in `wanted` (its offset), the (output row, input row) pairs that hit.

    z is the last key field, so the keys of ``q + (dx, dy, dz)`` for one column ``(dx, dy)`` are
    consecutive integers: one `torch.searchsorted` for the column's lowest dz finds them all, the others
    sit at the next few sorted positions. `queries` must be sorted (then the searches walk the keys in
    order, several times faster than random queries); `rows` are their output rows.
    """
    columns: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for k, (dx, dy, dz) in wanted.items():
        columns.setdefault((dx, dy), []).append((dz, k))
    found: dict[int, tuple[Tensor, Tensor]] = {}
    spans = [max(e)[0] - min(e)[0] for e in columns.values()]
    # Sentinels past the last key let every lookup read `span` places on without bounds checks.
    padded = torch.cat([index.keys, index.keys.new_full((max(spans, default=0) + 1,), _MAX_KEY)])
    for ((dx, dy), entries), span in zip(columns.items(), spans):
        entries.sort()
        zmin = entries[0][0]
        q = queries + int(index.packing.delta(torch.tensor([[dx, dy, zmin]]))[0])
        pos = torch.searchsorted(index.keys, q)
        # diffs[r]: how far above q lies the key r places after the insertion point.
        diffs = [padded[pos + r] - q for r in range(span + 1)]
        for dz, k in entries:
            t = dz - zmin
            hit = diffs[0] == t
            at = pos
            for r in range(1, t + 1):  # keys are distinct, so key q + t lies at most t places on
                m = diffs[r] == t
                hit |= m
                at = torch.where(m, pos + r, at)
            idx = hit.nonzero().squeeze(1)
            found[k] = (rows[idx], index.order[at[idx]])
    return found


def _lookup_dense(
    coords_in: Tensor, coords_out: Tensor, rows: Tensor, wanted: dict[int, tuple[int, int, int]],
    step: Sequence[int],
) -> dict[int, tuple[Tensor, Tensor]] | None:
    """`_lookup_columns`' pairs, in the same order, through a dense table of `coords_in` on the
    lattice `step`; the output sites are looked up in the order of `rows`. None where no table is built
    (too sparse, or a site or offset off the lattice)."""
    if any(o % s for off in wanted.values() for o, s in zip(off, step)):
        return None
    reach = [max((abs(off[a]) // step[a] for off in wanted.values()), default=0) for a in range(3)]
    rows_in = torch.arange(coords_in.shape[0], device=coords_in.device)
    grid = build_table(coords_in, rows_in, step, box=[coords_out], pad=reach)
    if grid is None:
        return None
    keys = grid.key(coords_out.index_select(0, rows))
    found: dict[int, tuple[Tensor, Tensor]] = {}
    for k, off in wanted.items():
        hits = torch.index_select(grid.table, 0, keys + grid.delta(off))
        idx = (hits >= 0).nonzero().squeeze(1)
        found[k] = (rows[idx], hits[idx].long())
    return found


def build_kernel_map(index: SortedCoords, coords_in: Tensor, coords_out: Tensor, offsets: Tensor,
                     *, submanifold: bool = False, step: Sequence[int] | None = None) -> KernelMap:
    """Pairs of ``out site q`` and ``input site q + offsets[k]`` for every weight row `k`.

    `index` holds the sorted keys of `coords_in`; `offsets` `(K, 3)` are in coordinate units (already
    scaled by stride and dilation). With `submanifold` (the output sites are the input sites, in order)
    the zero offset is the identity and, when the offsets come in opposite pairs ``k, K-1-k``, only half
    of the columns are searched: the pairs of ``-d`` are those of ``d`` swapped. With `step` (the
    lattice of the sites: the input stride) the pairs are read from a dense table where it is small
    enough (`unsup3d.sparse.grid_table`), else searched; the map is the same either way.
    """
    device = coords_out.device
    volume = offsets.shape[0]
    n_in, n_out = coords_in.shape[0], coords_out.shape[0]
    empty = torch.zeros(0, dtype=torch.long, device=device)
    offs = [tuple(o) for o in offsets.tolist()]
    identity = offs.index((0, 0, 0)) if submanifold and (0, 0, 0) in offs else -1
    if n_in == 0 or n_out == 0:
        return KernelMap(empty, empty, (0,) * (volume + 1), n_in, n_out, identity, coords_in, coords_out)
    if submanifold:
        queries, rows = index.keys, index.order  # the output sites are the input sites, keys sorted
    else:
        queries, rows = torch.sort(index.packing.encode(coords_out))
    symmetric = submanifold and identity == volume // 2 and all(
        offs[volume - 1 - k] == (-o[0], -o[1], -o[2]) for k, o in enumerate(offs))
    if symmetric:
        # Of each pair of opposite columns search one; in the (0, 0) column the negative dz.
        wanted = {k: o for k, o in enumerate(offs) if (o[0], o[1]) < (0, 0) or (o[:2] == (0, 0) and o[2] < 0)}
    else:
        wanted = {k: o for k, o in enumerate(offs) if k != identity}
    found = None
    if step is not None:
        found = _lookup_dense(coords_in, coords_in if submanifold else coords_out, rows, wanted, step)
    if found is None:
        found = _lookup_columns(index, queries, rows, wanted)
    if symmetric:
        for k in list(found):
            out_rows, in_rows = found[k]
            found[volume - 1 - k] = (in_rows, out_rows)
    ins, outs, bounds = [], [], [0]
    for k in range(volume):
        out_rows, in_rows = found.get(k, (empty, empty))
        ins.append(in_rows)
        outs.append(out_rows)
        bounds.append(bounds[-1] + in_rows.shape[0])
    return KernelMap(torch.cat(ins), torch.cat(outs), tuple(bounds), n_in, n_out, identity, coords_in,
                     coords_out)


def downsample_coords(coords: Tensor, packing: KeyPacking,
                      out_stride: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Unique ``floor(c / S) * S`` of `coords` (sorted lexicographically) and each input's output site."""
    s = torch.tensor([1, *out_stride], dtype=torch.int32, device=coords.device)
    down = torch.div(coords, s, rounding_mode="floor") * s
    keys, inverse = torch.unique(packing.encode(down), sorted=True, return_inverse=True)
    return packing.decode(keys), inverse


def _downsample_partition(coords_in: Tensor, coords_out: Tensor, inverse: Tensor, offsets: Tensor,
                          in_stride: Sequence[int]) -> tuple[Tensor, Tensor, tuple[int, ...]] | None:
    """Map of a kernel-2 (or 1), stride = kernel downsampling: every input feeds exactly one output.

    Returns None when the offsets are not exactly the cells ``0 .. stride - 1`` of each output.
    """
    step = torch.tensor(in_stride, device=coords_in.device)
    rel = (coords_in[:, 1:] - coords_out[inverse, 1:]).long() // step
    offs = offsets.long() // torch.tensor(in_stride, device=offsets.device)
    if offs.min() < 0 or offs.max() > 1:
        return None
    code_off = offs[:, 0] * 4 + offs[:, 1] * 2 + offs[:, 2]
    table = torch.full((8,), -1, dtype=torch.long, device=offsets.device)
    table[code_off] = torch.arange(offsets.shape[0], device=offsets.device)
    k = table[rel[:, 0] * 4 + rel[:, 1] * 2 + rel[:, 2]]
    order = torch.sort(k, stable=True).indices
    counts = torch.bincount(k, minlength=offsets.shape[0]).tolist()
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    return order, inverse[order], tuple(bounds)


def get_kernel_map(x: SparseTensor, kernel_size: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int]) -> KernelMap:
    """The map of a (non-transposed) convolution on `x`, from `x`'s cache or built and cached."""
    ks, st, dil = tuple(kernel_size), tuple(stride), tuple(dilation)
    key = (x.stride, ks, st, dil)
    cached = x._caches.kmaps.get(key)
    if cached is not None:
        if cached.n_in != x.coords.shape[0]:
            raise ValueError(
                f"kernel map cached for stride {x.stride} has {cached.n_in} inputs, the tensor has "
                f"{x.coords.shape[0]} sites: tensors of different sites share one cache"
            )
        return cached
    if x.coords.dim() != 2 or x.coords.shape[1] != 4:
        raise ValueError(f"conv3d: coords must be (N, 4) (batch, x, y, z), got {tuple(x.coords.shape)}")
    offsets = kernel_offsets(ks, dil, x.coords.device) * torch.tensor(x.stride, dtype=torch.int32,
                                                                      device=x.coords.device)
    reach = offsets.abs().amax(dim=0).tolist() if offsets.numel() else [0, 0, 0]
    if all(s == 1 for s in st):
        index = _index_for(x, reach)
        kmap = build_kernel_map(index, x.coords, x.coords, offsets, submanifold=True, step=x.stride)
    else:
        out_stride = tuple(a * b for a, b in zip(x.stride, st))
        index = _index_for(x, [r + s for r, s in zip(reach, out_stride)])
        coords_out, inverse = downsample_coords(x.coords, index.packing, out_stride)
        part = None
        if all(k == s and k in (1, 2) for k, s in zip(ks, st)) and all(d == 1 for d in dil):
            part = _downsample_partition(x.coords, coords_out, inverse, offsets, x.stride)
        if part is not None:
            kmap = KernelMap(part[0], part[1], part[2], x.coords.shape[0], coords_out.shape[0], -1,
                             x.coords, coords_out)
        else:
            kmap = build_kernel_map(index, x.coords, coords_out, offsets, step=x.stride)
    x._caches.kmaps[key] = kmap
    return kmap


def get_transposed_kernel_map(x: SparseTensor, kernel_size: Sequence[int], stride: Sequence[int],
                              dilation: Sequence[int]) -> tuple[KernelMap, tuple[int, ...]]:
    """The map of the downsampling that made `x`'s stride (to be used inverted) and the finer stride.

    Reuses the cached map when there is one; otherwise builds it from the finer coordinates in `x`'s
    cache (`cmaps`) and `x`'s sites, and caches it.
    """
    ks, st, dil = tuple(kernel_size), tuple(stride), tuple(dilation)
    if any(a % b for a, b in zip(x.stride, st)):
        raise ValueError(f"transposed conv: tensor stride {x.stride} is not a multiple of conv stride {st}")
    fine = tuple(a // b for a, b in zip(x.stride, st))
    key = (fine, ks, st, dil)
    n = x.coords.shape[0]
    kmap = x._caches.kmaps.get(key)
    if kmap is not None and kmap.n_out == n and (
            kmap.coords_out is x.coords or torch.equal(kmap.coords_out, x.coords)):
        return kmap, fine
    coords_fine = x._caches.cmaps.get(fine)
    if coords_fine is None:
        raise ValueError(
            f"transposed conv: no coordinates of stride {fine} in the tensor's cache; a transposed conv "
            f"must follow, in the same forward pass, the convolution that went from stride {fine} to "
            f"{x.stride}"
        )
    offsets = kernel_offsets(ks, dil, x.coords.device) * torch.tensor(fine, dtype=torch.int32,
                                                                      device=x.coords.device)
    reach = offsets.abs().amax(dim=0).tolist()
    lo, hi, _ = _bounds(x.coords)
    index = sorted_coords(coords_fine, reach, query_box=(lo, hi))
    kmap = build_kernel_map(index, coords_fine, x.coords, offsets, step=fine)
    x._caches.kmaps[key] = kmap
    return kmap, fine

"""The ListOps generator: the LRA process (Nangia & Bowman 2018; Tay et al. 2021), vectorised.

Operators MIN, MAX, MED (int of the median), SM (sum mod 10) over digits; 2-10 arguments per
operator; below the root a node is a digit with probability 0.75; depth <= 10; kept when
500 < length < 2000 tokens (parentheses dropped). Lines are written in the released format,

    ( ( ( [MAX 2 ) 9 ) ] )<TAB>9

This module needs only numpy, so its worker processes start fast (they are spawned, never
forked from a process that holds torch's threads).

    from lra.generators.listops import prepare_listops
    prepare_listops("data/listops", workers=2)   # basic_{train,val,test}.tsv, 96K/2K/2K
"""
import hashlib
import itertools
import multiprocessing
import os
import signal
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
HEADER = b"Source\tTarget\r\n"  # lines end in \r\n, as the csv writer of the original wrote them
CHUNK_ROOTS = 1024  # trees drawn per generator chunk; part of what a seed means


@dataclass(frozen=True)
class TreeSpec:
    """The random process of the LRA script and its length window (both ends exclusive).

    A node at depth < max_depth (the root has depth 1) is a leaf (a digit 0-9) with
    probability `leaf_prob`, else an operator with min_args..max_args children; nodes at
    max_depth are leaves. Length counts tokens with parentheses dropped: 2 per operator
    (`[OP` and `]`) plus 1 per digit.
    """
    max_depth: int = 10
    min_args: int = 2
    max_args: int = 10
    leaf_prob: float = 0.75
    min_length: int = 500
    max_length: int = 2000

    def __post_init__(self):
        if not (1 <= self.min_args <= self.max_args and 0 <= self.leaf_prob <= 1
                and self.max_depth >= 2):
            raise ValueError(f"bad ListOps tree spec {self}: need 1 <= min_args <= max_args, "
                             "0 <= leaf_prob <= 1 and max_depth >= 2")
        if not 1 <= self.min_length < self.max_length - 1:
            raise ValueError(f"bad ListOps length window ({self.min_length}, {self.max_length}): "
                             "need 1 <= min_length and some integer strictly between the two")


def _grow(spec, rng):
    """Draw CHUNK_ROOTS trees breadth first, all at once; drop a tree as soon as it must be too
    long.

    Returns the levels (per node: tree, is_op, k children, sym = operator 0-3 or digit; the
    children of a level's operators make up the next level, in order) and a mask of the
    trees whose length is in the window.
    The root is drawn as an operator: a lone digit has length 1, never in the window.
    """
    n_roots = CHUNK_ROOTS
    tree = np.arange(n_roots)
    length = np.zeros(n_roots)  # tokens of the nodes drawn so far
    alive = np.ones(n_roots, bool)
    levels = []
    for depth in range(1, spec.max_depth + 1):
        n = len(tree)
        if depth == 1:
            is_op = np.ones(n, bool)
        elif depth < spec.max_depth:
            is_op = rng.random(n) >= spec.leaf_prob
        else:
            is_op = np.zeros(n, bool)
        k = np.where(is_op, rng.integers(spec.min_args, spec.max_args + 1, n), 0)
        sym = np.where(is_op, rng.integers(0, 4, n), rng.integers(0, 10, n))
        levels.append(SimpleNamespace(tree=tree, is_op=is_op, k=k, sym=sym))
        length += np.bincount(tree, weights=1 + is_op, minlength=n_roots)
        pending = np.bincount(tree, weights=k, minlength=n_roots)  # each child adds >= 1 token
        alive &= length + pending < spec.max_length
        tree = np.repeat(tree, np.where(alive[tree], k, 0))  # the children, in their parents' order
        if not len(tree):
            break
    return levels, alive & (length > spec.min_length)


def _chunk(spec, seed, index):
    """Chunk `index` of the stream for (spec, seed): the kept trees as lines
    `source\\ttarget\\n`."""
    levels, keep = _grow(spec, np.random.default_rng([seed, index]))
    ordinal = np.cumsum(keep) - 1  # tree id -> rank among the kept trees
    for lv in levels:
        sel = keep[lv.tree]
        lv.tree, lv.is_op, lv.k, lv.sym = (ordinal[lv.tree[sel]], lv.is_op[sel], lv.k[sel],
                                           lv.sym[sel])
        lv.ops = np.flatnonzero(lv.is_op)
        # the first child of each operator, on the level below
        lv.starts = np.cumsum(lv.k[lv.ops]) - lv.k[lv.ops]

    # Bottom up: token length and value of every subtree. The children of a level's operators
    # are the level below, contiguous and in order, so segment reductions give both.
    below = None
    for lv in reversed(levels):
        lv.length, lv.value = 1 + lv.is_op, lv.sym.copy()
        if len(lv.ops):
            k, starts, v = lv.k[lv.ops], lv.starts, below.value
            lv.length[lv.ops] += np.add.reduceat(below.length, starts)
            # the values sorted within each operator's segment
            ranked = np.sort(np.repeat(np.arange(len(k)) * 10, k) + v) % 10
            # int(np.median)
            median = (ranked[starts + (k - 1) // 2] + ranked[starts + k // 2]) // 2
            lv.value[lv.ops] = np.choose(lv.sym[lv.ops], [np.minimum.reduceat(v, starts),
                                                          np.maximum.reduceat(v, starts),
                                                          median, np.add.reduceat(v, starts) % 10])
        below = lv

    # Top down: where each node's text starts, counted in tokens of its tree (parentheses
    # aside): the parent's start + 1 for `[OP` + the lengths of the earlier siblings.
    levels[0].start = np.zeros(len(levels[0].tree), np.int64)
    for up, lv in zip(levels, levels[1:]):
        before = np.cumsum(lv.length) - lv.length
        lv.start = np.repeat(up.start[up.ops] + 1 - before[up.starts], up.k[up.ops]) + before

    # One text piece per token: a digit with the parenthesis closing it, "7 ) "; an operator
    # with the k + 1 parentheses opening it, "( ( ( [MAX "; an inner operator's end, "] ) ) ";
    # the root's end with the target, "] )\t9\n". Pieces are addressed by code.
    n_k = spec.max_args - spec.min_args + 1
    pieces = ([f"{d} ) " for d in range(10)]
              + ["( " * (k + 1) + op + " "
                 for op in OPERATORS for k in range(spec.min_args, spec.max_args + 1)]
              + ["] ) ) "] + [f"] )\t{d}\n" for d in range(10)])
    pieces = np.array(pieces, dtype=object)
    first = np.cumsum(levels[0].length) - levels[0].length  # first token of each tree
    codes = np.empty(levels[0].length.sum(), np.int64)
    for depth, lv in enumerate(levels):
        at = first[lv.tree] + lv.start
        codes[at] = np.where(lv.is_op, 10 + lv.sym * n_k + lv.k - spec.min_args, lv.sym)
        ends = at[lv.ops] + lv.length[lv.ops] - 1
        codes[ends] = 10 + 4 * n_k + (1 + lv.value[lv.ops] if depth == 0 else 0)
    return "".join(pieces[codes].tolist()).encode()


def _chunks(spec, seed, workers):
    """Chunks 0, 1, 2, ... in order; with workers > 1 computed ahead by a process pool."""
    if workers <= 1:
        for index in itertools.count():
            yield _chunk(spec, seed, index)
        return
    with multiprocessing.get_context("spawn").Pool(workers, signal.signal,
                                                   (signal.SIGINT, signal.SIG_IGN)) as pool:
        ahead = deque(pool.apply_async(_chunk, (spec, seed, i)) for i in range(2 * workers))
        try:
            for index in itertools.count(2 * workers):
                yield ahead.popleft().get()
                ahead.append(pool.apply_async(_chunk, (spec, seed, index)))
        finally:  # the chunks in flight are handed over before the pool stops: a worker still
            for chunk in ahead:  # writing one when it terminates blocks Pool.terminate for ever
                chunk.wait()


def samples(spec, seed, workers=1):
    """Endless stream of distinct lines `source<TAB>target` (bytes), fixed by (spec, seed).

    Exact rejection sampling of the LRA process conditioned on the length window, vectorised
    over CHUNK_ROOTS trees per chunk; chunk i draws from numpy's generator seeded [seed, i],
    so the stream does not depend on `workers`.
    """
    seen = set()
    for index, chunk in enumerate(_chunks(spec, seed, workers)):
        for line in chunk.splitlines():
            key = hashlib.blake2b(line, digest_size=16).digest()
            if key not in seen:
                seen.add(key)
                yield line
        if not seen and index == 63:
            raise ValueError(f"{spec} drew no tree in its length window in {64 * CHUNK_ROOTS} "
                             "tries; widen the window or allow deeper trees")


def prepare_listops(out_dir, n_train=96_000, n_val=2_000, n_test=2_000, seed=0, min_length=500,
                    max_length=2000, workers=1, progress=True):
    """Write `basic_{train,val,test}.tsv` in the released format into `out_dir`; return it (a Path).

    The splits are consecutive runs of one stream of distinct samples, so they never share
    an expression. Same arguments -> the same bytes, whatever `workers`. Each file is written
    to a temporary name and renamed when all three are complete.
    """
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if min(sizes.values()) < 1 or workers < 1:
        raise ValueError(f"every split needs at least one example and workers at least 1; got "
                         f"{', '.join(f'{k} {v}' for k, v in sizes.items())}, workers {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = samples(TreeSpec(min_length=min_length, max_length=max_length), seed, workers)
    temps = {}
    try:
        with tqdm(total=sum(sizes.values()), desc="listops", unit=" samples",
                  disable=not progress) as bar:
            for split, n in sizes.items():
                fd, temps[split] = tempfile.mkstemp(prefix=f".basic_{split}.", suffix=".tmp",
                                                    dir=out)
                with os.fdopen(fd, "wb") as f:
                    f.write(HEADER)
                    for line in itertools.islice(stream, n):
                        f.write(line + b"\r\n")
                        bar.update()
        for split, tmp in temps.items():
            os.chmod(tmp, 0o644)  # mkstemp makes it private
            os.replace(tmp, out / f"basic_{split}.tsv")
    finally:
        stream.close()
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
    return out

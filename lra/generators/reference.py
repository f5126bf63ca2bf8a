"""Slow references: the original generators' algorithms as they were written, for `lra bench data`.

- ListOps: the LRA script (Tay et al., 2021) draws whole trees recursively with Python's
  `random` (a node below depth 10 is a digit with probability 0.75, else one of four
  operators over 2-10 arguments) and keeps the distinct ones with 500 < length < 2000;
  about 8% of trees are kept.
- Pathfinder: Linsley et al.'s `snakes2.py` with the LRA's settings. Every paddle is drawn
  with PIL and shrunk with a Lanczos filter into whole-window frames, the contours' mask is
  dilated over the whole window at every step, and seeds and paddles are found by rejection.
  OpenCV's dilation and scipy's `imresize`/`imsave` are replaced by their numpy/PIL
  equivalents in `lra.generators.pathfinder`, which also holds the fast version of the same
  process: the two give identical images from the same random generator.

    from lra.generators.reference import listops_lines, pathfinder_image
"""
import math
import random

import numpy as np

from lra.generators.listops import TreeSpec
from lra.generators.pathfinder import (
    OVERLAP,
    Drawing,
    dilate,
    disc,
    finish,
    flip,
    random_angle,
    render_paddle,
    translate,
    window,
)

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")


# --- ListOps -------------------------------------------------------------------------------

def listops_tree(rand, spec, depth=1):
    """(tree, length) as the script built it: a digit, or an operator with k arguments nested
    left to right in pairs, ((((op, a1), a2), ...), ak), "]"); length counts its tokens."""
    if depth < spec.max_depth and rand.random() <= 1 - spec.leaf_prob:
        length = 2
        args = []
        for _ in range(rand.randint(spec.min_args, spec.max_args)):
            arg, n = listops_tree(rand, spec, depth + 1)
            args.append(arg)
            length += n
        tree = (rand.choice(OPERATORS), args[0])
        for arg in args[1:]:
            tree = (tree, arg)
        return (tree, "]"), length
    return rand.choice(range(10)), 1


def listops_text(tree):
    """`( left right )` for every pair, recursively: MAX(2, 9) is `( ( ( [MAX 2 ) 9 ) ] )`."""
    if not isinstance(tree, tuple):
        return str(tree)
    return "( " + listops_text(tree[0]) + " " + listops_text(tree[1]) + " )"


def listops_value(tree):
    """The value of a tree by walking its pairs: an operator gathers arguments until its "]"."""
    if not isinstance(tree, tuple):
        return tree
    left, right = listops_value(tree[0]), listops_value(tree[1])
    if left in OPERATORS:
        return left, [right]
    if right == "]":
        op, args = left
        return {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)),
                "[SM": lambda a: sum(a) % 10}[op](args)
    return left[0], left[1] + [right]


def listops_lines(n, spec=None, seed=0):
    """`n` lines `source<TAB>target` as the script made them: whole trees drawn until `n`
    distinct ones have 500 < length < 2000 (a set of trees), then written out."""
    spec, rand, trees = spec or TreeSpec(), random.Random(seed), set()
    while len(trees) < n:
        tree, length = listops_tree(rand, spec)
        if spec.min_length < length < spec.max_length:
            trees.add(tree)
    return [f"{listops_text(tree)}\t{listops_value(tree)}" for tree in trees]


# --- Pathfinder ----------------------------------------------------------------------------

def _frame_paddle(shape, start, angle, spec, margin, contrast=1.0):
    """A paddle from `start` along `angle` in whole frames of `shape`: (ink, mask), float32."""
    line, mask = render_paddle(spec.paddle_length, spec.thickness, margin, spec.antialias, angle)
    reach = spec.paddle_length + math.ceil(spec.thickness) + margin
    ink, cover = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    frame, part = window(start, reach, shape)
    ink[frame] = (line * contrast if contrast != 1.0 else line)[part]
    cover[frame] = mask[part]
    return ink, cover


def _inside(res, *points):
    return all(0 <= c < res for point in points for c in point)


def _seed(mask, lined, spec, margin, rng, min_free=0.0):
    """A first paddle where its footprint, dilated over the whole window, misses `lined`:
    (start, angle, pivot), or None."""
    res, length = spec.resolution, spec.paddle_length
    reach = length + margin
    for _ in range(spec.paddle_tries):
        angle = random_angle(rng)
        kernel = _frame_paddle((2 * reach + 1,) * 2, (reach + 1, reach + 1), angle, spec, margin)[1]
        # -inf where the kernel misses the window
        taken = np.ceil(dilate(lined, kernel.astype(np.uint8)) - 0.3)
        raw_free = np.count_nonzero(np.ceil(mask - 0.3) == 0)
        # any negative: "no free pixel"
        ys, xs = np.nonzero(taken == 0) if taken.min() >= 0 else ((), ())
        if min_free and raw_free / res ** 2 < min_free:
            return None
        if not len(ys):
            return None
        k = rng.integers(0, len(ys))
        start = (int(ys[k]), int(xs[k]))
        head = translate(start, angle, length)
        pivot = translate(head, flip(angle), length + margin)
        if _inside(res, head, pivot):
            return start, angle, pivot
    return None


def _extend(snake, mask, spec, margin, rng, contrast):
    """The next paddle of `snake` (a dict), chosen among the pixels of a circle around its pivot;
    returns the new mask, or None at a dead end."""
    res, length = spec.resolution, spec.paddle_length
    pivot = translate(snake["pivot"], snake["angle"], length + 2 * margin)
    dilated = dilate(mask, disc(margin))
    radius = length + margin
    angles = np.arange(0, 360, 360.0 / (2 * radius * np.pi)) * np.pi / 180
    ys, xs = pivot[0] + radius * np.sin(angles), pivot[1] + radius * np.cos(angles)
    inside = ~((ys >= res) | (ys < 0) | (xs >= res) | (xs < 0))
    if not inside.any():
        return None
    coords = np.unique(np.stack([ys, xs], axis=1).astype(int)[inside], axis=0)
    directions = np.arctan2(coords[:, 0] - pivot[0], coords[:, 1] - pivot[1])
    turn = np.abs(directions - snake["angle"])
    turn = np.minimum(np.minimum(turn, 2 * np.pi - turn) * spec.continuity, 0.5 * np.pi)
    pmf = np.multiply(np.array([1 - dilated[coords[:, 0], coords[:, 1]]]),
                      np.maximum(np.cos(turn), 0) ** 2)
    total = np.sum(pmf)
    if total < 1e-4:
        return None
    cmf = np.cumsum(pmf / total)
    for _ in range(spec.paddle_tries):
        pick = np.argmax(cmf - rng.random() > 0)
        head = (int(coords[pick, 0]), int(coords[pick, 1]))
        ink, cover = _frame_paddle(mask.shape, head, flip(directions[pick]), spec, margin, contrast)
        if np.max(mask + cover) < OVERLAP:
            snake["image"] = np.maximum(snake["image"], ink)
            mask = np.maximum(mask, snake["cover"])
            snake.update(cover=cover, pivot=pivot, angle=directions[pick], tip=head)
            snake["paddles"].append((head, translate(head, flip(directions[pick]), length)))
            return mask
    return None


def _new_snake(shape, start, angle, pivot, spec, margin, contrast):
    ink, cover = _frame_paddle(shape, start, angle, spec, margin, contrast)
    return {"image": ink.astype(np.float64), "cover": cover, "pivot": pivot, "angle": angle,
            "start": start, "tip": start,
            "paddles": [(start, translate(start, angle, spec.paddle_length))]}


def _targets(spec, margin, rng):
    """Two targets grown alternately from seeds `seed_distance` apart: (snakes, mask) or None."""
    res, shape = spec.resolution, (spec.resolution,) * 2
    mask = np.zeros(shape)
    p = spec.padding
    mask[:p], mask[-p:], mask[:, :p], mask[:, -p:] = 1, 1, 1, 1
    lined = mask.copy()
    d = 2 * spec.seed_distance
    lined[:d], lined[res - d:], lined[:, :d], lined[:, res - d:] = 1, 1, 1, 1
    seed = _seed(mask, lined, spec, margin, rng)
    if seed is None:
        return None
    snakes = [_new_snake(shape, *seed, spec, margin, spec.target_contrast)]
    for _ in range(spec.paddle_tries):
        angle = random_angle(rng)
        turn = int(rng.integers(0, 360)) * math.pi / 180
        start = (round(seed[0][0] + spec.seed_distance * math.sin(turn)),
                 round(seed[0][1] + spec.seed_distance * math.cos(turn)))
        head = translate(start, angle, spec.paddle_length)
        pivot = translate(head, flip(angle), spec.paddle_length + margin)
        if _inside(res, head, pivot):
            snakes.append(_new_snake(shape, start, angle, pivot, spec, margin,
                                     spec.target_contrast))
            break
    else:
        return None
    for _ in range(spec.contour_length - 1):
        for snake in snakes:
            mask = _extend(snake, mask, spec, margin, rng, spec.target_contrast)
            if mask is None:
                return None
    return snakes, np.maximum(mask, snakes[1]["cover"])


def _distractor(image, mask, spec, margin, rng):
    """One distractor contour drawn into copies of image and mask: (snake, image, mask), or None."""
    lined = mask.copy()
    lined[0], lined[-1], lined[:, 0], lined[:, -1] = 1, 1, 1, 1
    seed = _seed(mask, lined, spec, margin, rng, spec.min_free)
    if seed is None:
        return None
    snake = _new_snake(mask.shape, *seed, spec, margin, spec.distractor_contrast)
    for _ in range(spec.distractor_length - 1):
        mask = _extend(snake, mask, spec, margin, rng, spec.distractor_contrast)
        if mask is None:
            return None
    return snake, np.maximum(image, snake["image"]), np.maximum(mask, snake["cover"])


def pathfinder_image(spec, rng, label):
    """One image by the original's process, the slow way (a `Drawing`, as `pathfinder.draw`
    returns)."""
    margin = (spec.margins[int(rng.integers(0, len(spec.margins)))] if len(spec.margins) > 1
              else spec.margins[0])
    found = None
    while found is None:
        found = _targets(spec, margin, rng)
    targets, mask = found
    image = np.maximum(targets[0]["image"], targets[1]["image"])
    contours = list(targets)
    for _ in range(spec.n_distractors):
        for _ in range(spec.distractor_tries):
            drawn = _distractor(image, mask, spec, margin, rng)
            if drawn is not None:
                snake, image, mask = drawn
                contours.append(snake)
                break
    first = int(rng.integers(0, 2))
    dots = np.array([targets[first]["start"], targets[first if label else 1 - first]["tip"]])
    return Drawing(finish(image, dots, spec), int(label), dots,
                   [np.array(s["paddles"]) for s in contours], margin)

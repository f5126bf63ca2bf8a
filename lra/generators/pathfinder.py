"""The Pathfinder generator: dashed curved contours and two dots; are the dots on one contour?

Linsley et al. (2018), "Learning long-range spatial dependencies with horizontal gated-recurrent
units", drew these images with their script `snakes2.py`; the Long-Range Arena used it at 32 px
(Pathfinder) and 128 px (Path-X) with targets of 14 paddles. This module runs the same process,
draw for draw, only faster; `lra.generators.reference` runs it the slow way it was written, and
the two give identical images from the same random generator (tests/test_pathfinder_generator.py).

The process, in the original's terms (lengths in pixels):
- A paddle is a line of `paddle_length` and `thickness`, drawn at `antialias` times the
  resolution with PIL and shrunk with a Lanczos filter, times a contrast; its "mask" is the
  same line widened by `margin` (one of `margins`, drawn per image).
- Two target contours start from seed paddles `seed_distance` apart near the centre and
  grow alternately, a paddle at a time: the next paddle's far end is drawn among the pixels
  on a circle of radius paddle_length + margin around a pivot 2 * margin past the last paddle,
  with weight (1 - the widened mask there) * cos(min(continuity * turn, 90 deg))^2, and kept
  if its mask adds to the contours' mask nowhere above 1.8 (3 tries). A dead end restarts
  both targets.
- Then up to `distractor_paddles // (contour_length // 3)` distractor contours of
  contour_length // 3 paddles, each seeded where its first paddle's mask is clear (5 tries
  per contour; one that never fits is left out, so images hold varying numbers).
- A seed at an angle whose seed kernel misses some pixel of the window fails outright: the
  original's OpenCV dilation fills such pixels with -DBL_MAX, and its free-pixel search then
  finds none (`_Kit.kernel`). At 32 px that is 330 of 360 angles: every seed points up and
  left, and most distractors are refused (1.1 of 5 on average). The release bears this out:
  so drawn, 32 px images match its statistics (mean pixel 20.1 vs 20.3, spread of image means
  2.0 vs 2.1, pixels > 0 34.1% vs 34%, > 127 8.5% vs 8.6%); without it they are much brighter
  (mean 28, 45% of pixels inked).
- Dots (discs of `marker_radius`) go on the far ends of the targets: both ends of one target
  (label 1) or one end of each (label 0).
- The image, the maximum of all paddles and dots, is stretched so its brightest pixel is 255.
  At 32 px the LRA set targets to contrast 1.5 and distractors to 2.0 (dots 1.0), so the
  stretch, and with it every image's mean, depends on the brightest distractor paddle.

Speed comes from drawing each paddle, mask and seed kernel once per angle (angles come from a
finite set) and each dot once, keeping the dilated mask up to date instead of recomputing it,
and working on the few pixels each step reads or writes, never on whole frames. Most of the
time goes into target pairs that are started over (about 25 per 32 px image and 360 per 128 px
image pass their first seed and then die), which is also why the original was slow. A step
there reads and writes tens of pixels, so numpy's fixed cost per call is most of its time:
each step makes few calls, and takes a shortcut where a cheap test settles the outcome exactly
(a paddle where the masks are faint fits; a draw not within rounding of a step of the summed
weights picks the same pixel), the original's longer way elsewhere.

    from lra.generators.pathfinder import prepare_pathfinder
    prepare_pathfinder("data/pathfinder", resolution=32, n=200_000, workers=2)
    # -> data/pathfinder/pathfinder32/curv_contour_length_14/
    #        {imgs/<b>/sample_<i>.png, metadata/<b>.npy}

This module needs only numpy and Pillow, so its spawned workers start fast.
"""
import functools
import io
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

DIFFICULTY_DIRS = {14: "curv_contour_length_14", 9: "curv_contour_length_9", 6: "curv_baseline"}
MAX_RESTARTS = 1_000_000  # target pairs started over before the spec is declared impossible
OVERLAP = 1.8  # a paddle is refused where its mask plus the contours' mask exceeds this


@dataclass(frozen=True)
class PathSpec:
    """The original script's arguments for one kind of image (lengths in pixels)."""
    resolution: int = 32
    contour_length: int = 14       # paddles per target (14 hard, 9 medium, 6 easy)
    distractor_paddles: int = 20   # this // distractor_length contours of distractor_length
    paddle_length: int = 2
    thickness: float = 0.5
    margins: tuple = (1,)          # one drawn per image; consecutive paddles are 2 * margin apart
    padding: int = 1               # border kept free of contours
    seed_distance: int = 7         # between the targets' first ends
    continuity: float = 1.0        # turns are weighted cos(min(continuity * turn, 90 deg))^2
    marker_radius: float = 1.5
    antialias: int = 2
    target_contrast: float = 1.5   # the LRA's 32 px set: paddle contrast 0.75 x snake contrast 2
    distractor_contrast: float = 2.0
    paddle_tries: int = 3          # the original's max_paddle_retrial + 1
    distractor_tries: int = 5      # max_distractor_contour_retrial + 1
    min_free: float = 0.01         # no distractor is seeded once less of the window is free

    @property
    def distractor_length(self):
        return max(1, self.contour_length // 3)

    @property
    def n_distractors(self):
        return self.distractor_paddles // self.distractor_length

    @property
    def folder(self):
        """The release's folder name of this difficulty (by target contour length)."""
        return DIFFICULTY_DIRS.get(self.contour_length,
                                   f"curv_contour_length_{self.contour_length}")


# The LRA's settings of the original script, as its TFDS builders list them (the rest are
# the script's defaults: paddle length 5, contrast 1, padding 22, seed distance 27).
PRESETS = {
    32: PathSpec(),
    64: PathSpec(resolution=64, distractor_paddles=22, paddle_length=5, thickness=1,
                 seed_distance=12, continuity=1.8, marker_radius=2.5,
                 target_contrast=0.8, distractor_contrast=0.8),
    128: PathSpec(resolution=128, distractor_paddles=35, paddle_length=5, thickness=1.5,
                  margins=(2, 3), seed_distance=20, continuity=1.8, marker_radius=3,
                  target_contrast=0.9, distractor_contrast=0.9),
    256: PathSpec(resolution=256, distractor_paddles=30, paddle_length=5, thickness=2,
                  margins=(3,), padding=22, seed_distance=27, continuity=1.8, marker_radius=5,
                  target_contrast=1.0, distractor_contrast=1.0),
}


def spec_for(resolution=32, contour_length=14):
    """The preset of `resolution` (32, 64, 128 or 256) with targets of `contour_length` paddles."""
    if resolution not in PRESETS:
        raise ValueError(f"no Pathfinder preset for resolution {resolution}; "
                         f"choose one of {sorted(PRESETS)}")
    return replace(PRESETS[resolution], contour_length=int(contour_length))


# --- drawing as the original drew (shared with lra.generators.reference) -------------------

def translate(point, angle, distance):
    """`point` (y, x) moved `distance` along `angle`, rounded up to whole pixels."""
    return (math.ceil(point[0] + distance * math.sin(angle)),
            math.ceil(point[1] + distance * math.cos(angle)))


def flip(angle):
    return angle + math.pi if angle < 0 else angle - math.pi


def random_angle(rng):
    """A whole number of degrees in [-180, 180), in radians."""
    return int(rng.integers(-180, 180)) * math.pi / 180


def bytescale(a):
    """Stretch a float image to uint8 with its minimum at 0 and maximum at 255 (scipy's
    `bytescale`, which the original's `imresize` and `imsave` applied); uint8 passes as is."""
    if a.dtype == np.uint8:
        return a
    low, high = a.min(), a.max()
    scale = 255 / ((high - low) or 1)
    return (((a - low) * scale).clip(0, 255) + 0.5).astype(np.uint8)


def shrink(a, size):
    """scipy's `imresize(a, (size, size), interp='lanczos')`: bytescale, then PIL's Lanczos."""
    return np.asarray(Image.fromarray(bytescale(a)).resize((size, size), Image.Resampling.LANCZOS))


def disc(radius):
    """A (2r + 1)^2 0/1 kernel: the pixels within `radius` of its centre."""
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def dilate(a, kernel):
    """Grey dilation as OpenCV's `dilate` computes it: out[p] = max of a[p + o] over the kernel's
    offsets o from its centre that fall inside; -inf where all fall outside."""
    h, w = a.shape
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(a.astype(np.float64), ((ry, ry), (rx, rx)), constant_values=-np.inf)
    out = np.full(a.shape, -np.inf)
    for i, j in zip(*np.nonzero(kernel)):
        np.maximum(out, padded[i:i + h, j:j + w], out=out)
    return out


def render_paddle(length, thickness, margin, antialias, angle):
    """The original's paddle from the centre of a (2R + 1)^2 window, R = length + ceil(thickness)
    + margin: (line, mask), float64 in [0, 1]. Both are drawn at `antialias` times the size and
    shrunk; the mask is the line widened by a disc of radius margin * antialias."""
    reach = length + math.ceil(thickness) + margin
    centre = reach * antialias
    head = translate((centre, centre), angle, length * antialias)
    big = Image.new("F", (2 * centre + 1, 2 * centre + 1), 0)
    ImageDraw.Draw(big).line([(centre, centre), (head[1], head[0])], fill=255,
                             width=round(thickness * antialias))
    big = np.asarray(big)
    line = shrink(big, 2 * reach + 1) / 255
    mask = shrink(dilate(big, disc(margin * antialias)).astype(np.uint8), 2 * reach + 1) / 255
    return line, mask


def window(start, reach, shape):
    """Slices of a frame of `shape` and of a (2 * reach + 1)^2 stamp centred at `start` that
    overlap."""
    (y, x), (h, w) = start, shape
    y0, y1, x0, x1 = (max(y - reach, 0), min(y + reach, h - 1) + 1,
                      max(x - reach, 0), min(x + reach, w - 1) + 1)
    return ((slice(y0, y1), slice(x0, x1)),
            (slice(y0 - y + reach, y1 - y + reach), slice(x0 - x + reach, x1 - x + reach)))


def marker(resolution, centre, radius, antialias):
    """The original's dot: a disc drawn at `antialias` times the size around `centre`, shrunk
    (uint8)."""
    size = resolution * antialias
    y, x = np.ogrid[-centre[0] * antialias:size - centre[0] * antialias,
                    -centre[1] * antialias:size - centre[1] * antialias]
    return shrink((x * x + y * y <= (radius * antialias) ** 2).astype(np.float64), resolution)


def finish(image, dots, spec, draw_marker=marker):
    """The dots over the paddles, stretched to 0..255 as the original saved it (uint8)."""
    markers = np.maximum(*(draw_marker(spec.resolution, d, spec.marker_radius, spec.antialias)
                           for d in dots))
    return bytescale(np.maximum(image, markers.astype(np.float64) / 255))


# --- the same process, fast ----------------------------------------------------------------

class Drawing(NamedTuple):
    """One image: pixels (res, res) uint8, its label, the dots' centres (2, 2) as (y, x),
    the contours as paddle ends (P, 2, 2) (paddle, start/end, y/x; the two targets first),
    and the paddle margin drawn for it."""
    pixels: np.ndarray
    label: int
    dots: np.ndarray
    contours: list
    margin: int


class _Paddle:
    """A paddle from the centre of a (2 reach + 1)^2 stamp: its `line` (float64) and `mask`
    (float32) as drawn; `stamp` (rows, columns, 2), minus the mask and 1 - the mask dilated by a
    disc of radius margin, cut to where the dilation is not 0 (rows and columns `box` from the
    centre); its `hot` mask values above OVERLAP - 1 with their offsets from the centre."""

    def __init__(self, line, mask, margin, res):
        self.line, self.mask, self.res = line, mask, res
        reach = mask.shape[0] // 2 + margin
        mask = np.pad(mask, margin)
        wide = dilate(mask, disc(margin))
        rows, cols = np.flatnonzero(wide.any(axis=1)), np.flatnonzero(wide.any(axis=0))
        cut = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        self.box = (int(rows[0]) - reach, int(rows[-1]) + 1 - reach,
                    int(cols[0]) - reach, int(cols[-1]) + 1 - reach)
        # mask is float32
        self.stamp = np.stack([-mask[cut], 1 - wide[cut]], axis=-1).astype(np.float64)
        hot_y, hot_x = np.nonzero(mask > OVERLAP - 1.01)
        self.hot = mask[hot_y, hot_x].astype(np.float64)
        self.hot_yx = hot_y - reach, hot_x - reach
        if len(self.hot):
            self.hot_box = (int(self.hot_yx[0].min()), int(self.hot_yx[0].max()) + 1,
                            int(self.hot_yx[1].min()), int(self.hot_yx[1].max()) + 1)
            # flat offsets from the first hot pixel: a slice of the state starting there takes
            # them all
            flat = 2 * (self.hot_yx[0] * res + self.hot_yx[1])
            self.hot_first, self.hot_flat = int(flat.min()), flat - flat.min()
            self.hot_ones = np.ones(len(self.hot))

    def fits(self, flat, start):
        """Whether the paddle from `start` adds to the contours' mask (minus it at the even
        indices of `flat`, the state flattened) nowhere up to `OVERLAP`: only its pixels above
        OVERLAP - 1 can, since no mask exceeds 1."""
        if not len(self.hot):
            return True
        (y, x), res = start, self.res
        y0, y1, x0, x1 = self.hot_box
        if y + y0 >= 0 and x + x0 >= 0 and y + y1 <= res and x + x1 <= res:
            there = flat[2 * (y * res + x) + self.hot_first:].take(self.hot_flat)  # minus mask
            # mostly the masks there sum to less than 0.78, and the paddle's (at most 1) cannot
            # reach OVERLAP with any of them (a dot product is the fastest sum or minimum of a
            # small array)
            return there.dot(self.hot_ones) > -0.78 or (self.hot - there).max() < OVERLAP
        hy, hx = self.hot_yx[0] + y, self.hot_yx[1] + x
        inside = (hy >= 0) & (hy < res) & (hx >= 0) & (hx < res)
        return (not inside.any()
                or (self.hot[inside] - flat[2 * (hy[inside] * res + hx[inside])]).max() < OVERLAP)

    def merge(self, state, start):
        """Add the paddle from `start` to the contours' mask and take its dilation out of the
        room."""
        (y, x), res = start, self.res
        y0, y1, x0, x1 = self.box
        y0, y1, x0, x1 = y + y0, y + y1, x + x0, x + x1
        if y0 >= 0 and x0 >= 0 and y1 <= res and x1 <= res:
            frame = state[y0:y1, x0:x1]
            np.minimum(frame, self.stamp, out=frame)
            return
        frame = state[max(y0, 0):min(y1, res), max(x0, 0):min(x1, res)]
        part = self.stamp[max(y0, 0) - y0:min(y1, res) - y0, max(x0, 0) - x0:min(x1, res) - x0]
        np.minimum(frame, part, out=frame)


class _Kit:
    """What one (spec, margin) draws from, made once per process and then looked up: paddle
    stamps, their masks and widened masks, and seed kernels per angle; the pixels the original
    tries around a pivot and their turn weights per heading.

    The original dilates the whole mask by a disc of radius margin before every paddle and
    reads 1 - that at the ~20-50 pixels it may pick. Here that "room" is kept up to date
    instead: dilation (a maximum over neighbours) commutes with the maximum that merges a
    paddle's mask, so a merge takes the minimum with 1 - the paddle's own dilated mask. (A
    paddle cut at the edge would dilate back in only within margin of the edge, where the
    padding's dilation is already 1, the most any mask holds.) The state is (res, res, 2):
    minus the mask and the room of each pixel side by side, so that one `np.minimum` merges
    both (numpy's overhead, not the pixels, is most of the cost of a step, and it grows with
    the number of strided dimensions).
    """

    def __init__(self, spec, margin):
        self.spec, self.margin, self.res = spec, margin, spec.resolution
        self.length, self.radius = spec.paddle_length, spec.paddle_length + margin
        # stamps are (2 reach + 1)^2
        self.reach = spec.paddle_length + math.ceil(spec.thickness) + margin
        res, p = self.res, spec.padding
        mask = np.zeros((res, res))
        mask[:p], mask[-p:], mask[:, :p], mask[:, -p:] = 1, 1, 1, 1
        # (res, res, 2): -mask, room
        self.empty = np.stack([-mask, 1 - dilate(mask, disc(margin))], axis=-1)
        # the state of target pairs being tried, restored after each
        self.scratch = self.empty.copy()
        # the first seed keeps 2 * seed_distance from every edge
        self.first_taken = np.ones((res, res), bool)
        d = 2 * spec.seed_distance
        self.first_taken[d:res - d, d:res - d] = mask[d:res - d, d:res - d] > 0.3
        # the pixels tried around a pivot p: p + (truncated offsets of one point per pixel of
        # arc), sorted
        sample = np.arange(0, 360, 360.0 / (2 * self.radius * np.pi)) * np.pi / 180
        arc = np.stack([np.floor(np.sin(sample) * self.radius),
                        np.floor(np.cos(sample) * self.radius)], axis=1)
        self.oy, self.ox = np.unique(arc.astype(int), axis=0).T
        self.offsets = list(zip(self.oy.tolist(), self.ox.tolist()))
        self.directions = np.arctan2(self.oy, self.ox)
        # the angle a paddle is drawn along towards its pivot
        self.turned = [flip(a) for a in self.directions]
        # pivots in `box` (top <= y < bottom, left <= x < right) have all offsets inside; the room
        # at them is then `flat` past the state's pixel pivot - (top, left), flattened
        top, left = -int(self.oy.min()), -int(self.ox.min())
        self.box = top, res - int(self.oy.max()), left, res - int(self.ox.max())
        self.flat = 2 * ((self.oy + top) * res + self.ox + left) + 1
        self._paddles, self._inks, self._kernels = {}, {}, {}
        self._first, self._courses, self._edge = {}, {}, {}
        self.courses = [self.course(a) for a in self.directions]  # after a turn towards offset j
        # the paddle drawn towards offset j
        self.turned_paddles = [self.paddle(a) for a in self.turned]

    def paddle(self, angle):
        """A `_Paddle` along `angle`, drawn once."""
        if angle not in self._paddles:
            line, mask = render_paddle(self.length, self.spec.thickness, self.margin,
                                       self.spec.antialias, angle)
            self._paddles[angle] = _Paddle(line, mask.astype(np.float32), self.margin, self.res)
        return self._paddles[angle]

    def ink(self, angle, contrast):
        """A paddle's pixels as the original placed them: float32 of line * contrast."""
        key = angle, contrast
        if key not in self._inks:
            line = self.paddle(angle).line
            self._inks[key] = (line * contrast if contrast != 1.0 else line).astype(np.float32)
        return self._inks[key]

    def kernel(self, angle):
        """The seed kernel's pixels as offsets into a frame padded by length + margin, or None
        where the kernel misses some pixel of the window.

        The original's seed kernel is the paddle's mask drawn from one pixel past the centre of
        a (2 (length + margin) + 1)^2 frame, cast to uint8 (so kept where it is exactly 1).
        Where it misses a pixel entirely, OpenCV's dilation of a float image fills that pixel
        with -DBL_MAX; the original's `find_available_coordinates` then sees a negative value and
        reports no free pixel at all, so the seed fails. That is most angles (330 of 360 at
        32 px): seeds take the few others, and fewer distractors fit than the script asks for.
        The released images bear it out: so drawn, 32 px images have the release's mean pixel
        (20) and ink (34% of pixels > 0); drawn without it, 28 and 45%.
        """
        if angle not in self._kernels:
            r = self.radius
            frame = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
            frame_part, part = window((r + 1, r + 1), self.reach, frame.shape)
            frame[frame_part] = self.paddle(angle).mask[part]
            kernel = frame.astype(np.uint8)
            # whether a pixel is reached depends only on its distances to the edges, capped at r:
            # a window 2 r + 1 wide holds every case a wider one does
            side = min(self.res, 2 * r + 1)
            reaches_all = np.isfinite(dilate(np.zeros((side, side)), kernel)).all()
            self._kernels[angle] = np.nonzero(kernel) if reaches_all else None
        return self._kernels[angle]

    def free_starts(self, taken, angle):
        """Flat indices of the pixels where a seed at `angle` covers no pixel `taken` (bool: the
        lined mask above 0.3; the original: dilate the lined mask by the seed kernel, keep
        `ceil(d - 0.3) == 0`); () if none."""
        kernel = self.kernel(angle)
        if kernel is None:
            return ()
        r, res = self.radius, self.res
        padded = np.pad(taken, r)
        covered = np.zeros_like(taken)
        for i, j in zip(*kernel):
            covered |= padded[i:i + res, j:j + res]
        return np.flatnonzero(~covered)

    def first_starts(self, angle):
        """`free_starts` of the first target seed, whose lined mask is always the same."""
        if angle not in self._first:
            self._first[angle] = self.free_starts(self.first_taken, angle)
        return self._first[angle]

    def near_edge(self, pivot):
        """For a pivot near the window's edge: which offsets land inside, and their flat indices."""
        if pivot not in self._edge:
            oy, ox = self.oy + pivot[0], self.ox + pivot[1]
            chosen = np.flatnonzero((oy >= 0) & (oy < self.res) & (ox >= 0) & (ox < self.res))
            self._edge[pivot] = chosen, 2 * (oy[chosen] * self.res + ox[chosen]) + 1
        return self._edge[pivot]

    def course(self, heading):
        """What a contour heading along `heading` needs next: the weight of each offset,
        cos(min(continuity * turn, 90 deg))^2, and the step (dy, dx) to its next pivot as
        `translate` takes it, before rounding."""
        if heading not in self._courses:
            turn = np.abs(self.directions - heading)
            turn = np.minimum(np.minimum(turn, 2 * np.pi - turn) * self.spec.continuity,
                              0.5 * np.pi)
            step = self.length + 2 * self.margin
            self._courses[heading] = (np.maximum(np.cos(turn), 0) ** 2, step * math.sin(heading),
                                      step * math.cos(heading))
        return self._courses[heading]


@functools.lru_cache(maxsize=16)
def _kit(spec, margin):
    return _Kit(spec, margin)


@functools.lru_cache(maxsize=16)
def _marker_stamp(radius, antialias):
    """`marker`'s dot in a window of its own, (2 h + 1)^2, and h."""
    h = math.ceil(radius) + 8
    return h, marker(2 * h + 1, (h, h), radius, antialias)


def _marker(resolution, centre, radius, antialias):
    """`marker`, the same pixels, from a stamp drawn once: a dot at least h from the edges is
    shrunk the same anywhere, since the Lanczos filter's window (3 px either side of a pixel)
    is then never cut by an edge where the dot's pixels reach."""
    h, stamp = _marker_stamp(radius, antialias)
    y, x = int(centre[0]), int(centre[1])
    if not (h <= y < resolution - h and h <= x < resolution - h):
        return marker(resolution, centre, radius, antialias)
    out = np.zeros((resolution, resolution), np.uint8)
    out[y - h:y + h + 1, x - h:x + h + 1] = stamp
    return out


class _Snake:
    """A contour being grown: where its next paddle hangs from, its heading's `course`, and its
    paddles as (start, angle), the newest one (`tip`, `last`) entering the contours' mask one
    step later."""

    def __init__(self, kit, start, angle, pivot, contrast):
        self.pivot, self.course, self.contrast = pivot, kit.course(angle), contrast
        self.tip, self.last = start, kit.paddle(angle)
        self.paddles = [(start, angle)]

    def grow(self, state, head, angle, paddle, pivot, course):
        """Add `paddle` from `head` along `angle`, merging the one before into `state`."""
        self.last.merge(state, self.tip)
        self.paddles.append((head, angle))
        self.tip, self.last, self.pivot, self.course = head, paddle, pivot, course


def _seed(kit, rng, free_starts, room=True):
    """A first paddle as the original's seeds: (start, angle, pivot), or None. Each try draws an
    angle, then a start among `free_starts(angle)`; a try whose paddle end or pivot leaves the
    window is repeated. `room` False: the window is too full (known only after an angle is
    drawn)."""
    res = kit.res
    for _ in range(kit.spec.paddle_tries):
        angle = random_angle(rng)
        if not room:
            return None
        free = free_starts(angle)
        if not len(free):
            return None
        start = divmod(int(free[rng.integers(0, len(free))]), res)
        head = translate(start, angle, kit.length)
        pivot = translate(head, flip(angle), kit.radius)
        if (0 <= head[0] < res and 0 <= head[1] < res
                and 0 <= pivot[0] < res and 0 <= pivot[1] < res):
            return start, angle, pivot
    return None


def _extend(kit, rng, state, flat, snake):
    """Add a paddle to `snake` as the original's `extend_snake` did; False at a dead end.
    `flat` is `state` flattened (a view)."""
    weights, sy, sx = snake.course
    y, x = pivot = (math.ceil(snake.pivot[0] + sy), math.ceil(snake.pivot[1] + sx))  # translate()
    top, bottom, left, right = kit.box
    if top <= y < bottom and left <= x < right:  # every offset is inside the window
        chosen = None
        pmf = flat[2 * ((y - top) * kit.res + x - left):].take(kit.flat) * weights
    else:
        chosen, at = kit.near_edge(pivot)
        if not len(chosen):
            return False
        pmf = flat.take(at) * weights[chosen]
    cmf = np.add.accumulate(pmf)  # pmf.cumsum(), but faster
    total = cmf.item(-1)
    if total < 1e-3 and pmf.sum() < 1e-4:  # the original's test, on its own (pairwise) sum
        return False
    for _ in range(kit.spec.paddle_tries):
        pick = _pick(pmf, cmf, total, rng.random())
        if chosen is not None:
            pick = int(chosen[pick])
        dy, dx = kit.offsets[pick]
        head, paddle = (y + dy, x + dx), kit.turned_paddles[pick]
        if paddle.fits(flat, head):
            snake.grow(state, head, kit.turned[pick], paddle, pivot, kit.courses[pick])
            return True
    return False


def _pick(pmf, cmf, total, r):
    """The offset the original picks with draw `r`: the first i where cumsum(pmf / pmf.sum()) > r,
    or 0 where there is none. Found here in `cmf`, the plain cumsum of pmf, and its last value
    `total`, which saves two passes but rounds differently, by 1e-14 of total at most (tens of
    terms): where r * total lies that close to a step of cmf, the original's way decides."""
    target, slack = r * total, 1e-12 * total
    i = int(cmf.searchsorted(target, side="right"))
    if (i < len(cmf) and cmf.item(i) > target + slack
            and (i == 0 or cmf.item(i - 1) < target - slack)):
        return i
    i = int((pmf / pmf.sum()).cumsum().searchsorted(r, side="right"))
    return i if i < len(pmf) else 0  # none: argmax of all False is the first


def _second_seed(kit, rng, first):
    """The second target's first paddle, `seed_distance` from the first's start in a drawn
    direction: (start, angle, pivot), or None after `paddle_tries` that leave the window."""
    spec, res = kit.spec, kit.res
    for _ in range(spec.paddle_tries):
        angle = random_angle(rng)
        turn = int(rng.integers(0, 360)) * math.pi / 180
        start = (round(first[0] + spec.seed_distance * math.sin(turn)),
                 round(first[1] + spec.seed_distance * math.cos(turn)))
        head = translate(start, angle, kit.length)
        pivot = translate(head, flip(angle), kit.radius)
        if (0 <= head[0] < res and 0 <= head[1] < res
                and 0 <= pivot[0] < res and 0 <= pivot[1] < res):
            return start, angle, pivot
    return None


def _targets(kit, rng):
    """The two targets, grown alternately from seeds `seed_distance` apart: (snakes, state),
    or None at a dead end (the original then starts both over)."""
    seed = _seed(kit, rng, kit.first_starts)
    if seed is None:
        return None
    second = _second_seed(kit, rng, seed[0])
    if second is None:
        return None
    snakes = [_Snake(kit, *seed, kit.spec.target_contrast),
              _Snake(kit, *second, kit.spec.target_contrast)]
    state = kit.scratch
    flat = state.reshape(-1)
    for _ in range(kit.spec.contour_length - 1):
        for snake in snakes:
            if not _extend(kit, rng, state, flat, snake):
                # a copy of the whole state is cheaper than undoing paddles
                np.copyto(state, kit.empty)
                return None
    # as the original: the second target's last paddle only
    snakes[1].last.merge(state, snakes[1].tip)
    kit.scratch = kit.empty.copy()
    return snakes, state


def _distractor(kit, rng, state, room):
    """One distractor contour: (snake, the state with it), or None where it does not fit."""
    taken = []  # the mask above 0.3, and the window's edge (the original's "lined" mask)

    def free_starts(angle):
        if kit.kernel(angle) is None:
            return ()
        if not taken:
            taken.append(state[..., 0] < -0.3)
            taken[0][0], taken[0][-1], taken[0][:, 0], taken[0][:, -1] = True, True, True, True
        return kit.free_starts(taken[0], angle)

    seed = _seed(kit, rng, free_starts, room)
    if seed is None:
        return None
    snake, state = _Snake(kit, *seed, kit.spec.distractor_contrast), state.copy()
    for _ in range(kit.spec.distractor_length - 1):
        if not _extend(kit, rng, state, state.reshape(-1), snake):
            return None
    snake.last.merge(state, snake.tip)
    return snake, state


def draw(spec, rng, label):
    """One image (a `Drawing`) with dots on one target (label 1) or on both (label 0)."""
    res = spec.resolution
    margin = (spec.margins[int(rng.integers(0, len(spec.margins)))] if len(spec.margins) > 1
              else spec.margins[0])
    kit = _kit(spec, margin)
    for _ in range(MAX_RESTARTS):
        found = _targets(kit, rng)
        if found is not None:
            break
    else:
        raise ValueError(f"could not fit two targets of {spec} into a {res} px window")
    targets, state = found
    contours = list(targets)
    for _ in range(spec.n_distractors):
        # the mask <= 0.3
        room = np.count_nonzero(state[..., 0] >= -0.3) / res ** 2 >= spec.min_free
        for _ in range(spec.distractor_tries):
            drawn = _distractor(kit, rng, state, room)
            if drawn is not None:
                contours.append(drawn[0])
                state = drawn[1]
                break
    image = np.zeros((res, res))
    for snake in contours:
        for start, angle in snake.paddles:
            frame, part = window(start, kit.reach, (res, res))
            np.maximum(image[frame], kit.ink(angle, snake.contrast)[part], out=image[frame])
    first = int(rng.integers(0, 2))
    dots = np.array([targets[first].paddles[0][0], targets[first if label else 1 - first].tip])
    ends = [np.array([(s, translate(s, a, kit.length)) for s, a in snake.paddles])
            for snake in contours]
    return Drawing(finish(image, dots, spec, _marker), int(label), dots, ends, margin)


def sample(spec, seed, batch, index, label):
    """Image `index` of batch folder `batch`: drawn from numpy's PCG64 seeded [seed, batch,
    index]."""
    return draw(spec, np.random.default_rng([seed, batch, index]), label)


# --- the release layout --------------------------------------------------------------------

def metadata_line(spec, batch, index, label, margin):
    """A line of `metadata/<b>.npy` in the release's 11 fields: folder, file, index, label,
    continuity, contour length, distractor length, paddle length, paddle thickness, margin,
    number of paddle contrasts."""
    return (f"imgs/{batch} sample_{index}.png {index} {label} {float(spec.continuity)} "
            f"{spec.contour_length} {spec.distractor_length} {spec.paddle_length} "
            f"{spec.thickness} {margin} 1\n")


def batch_labels(seed, batch, count):
    """Labels of a batch folder: half of them 1, in a seeded order."""
    return np.random.default_rng([seed, batch, 2 ** 32]).permutation(count) % 2


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_batch(job):
    """Write batch folder `batch` (imgs/<b>/ then metadata/<b>.npy, each by rename); return it."""
    spec, leaf, seed, batch, count = job
    leaf = Path(leaf)
    meta = leaf / "metadata" / f"{batch}.npy"
    if meta.is_file():  # written last: the batch is complete
        return batch
    imgs = leaf / "imgs" / str(batch)
    shutil.rmtree(imgs, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{batch}.", dir=leaf / "imgs"))
    lines = []
    try:
        for index, label in enumerate(batch_labels(seed, batch, count).tolist()):
            drawing = sample(spec, seed, batch, index, label)
            (tmp / f"sample_{index}.png").write_bytes(png(drawing.pixels))
            lines.append(metadata_line(spec, batch, index, label, drawing.margin))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        os.replace(tmp, imgs)
        fd, tmp_meta = tempfile.mkstemp(prefix=f".{batch}.", suffix=".tmp", dir=leaf / "metadata")
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
        os.chmod(tmp_meta, 0o644)
        os.replace(tmp_meta, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return batch


MIN_IMAGES = 10  # the 80/10/10 split gives each of val and test int(0.1 * n) images


def prepare_pathfinder(out_dir, resolution=32, n=200_000, seed=0, contour_length=14,
                       per_folder=1000, workers=1, progress=True):
    """Write `n` images in the release layout under `out_dir`; return the difficulty folder.

    Layout: out_dir/pathfinder<res>/<difficulty>/imgs/<b>/sample_<i>.png and metadata/<b>.npy
    (text, one line per image, the release's fields), `per_folder` images per batch folder.
    Each batch folder appears by rename when complete, its metadata file last, so an
    interrupted run resumes where it stopped. Same arguments -> the same files, whatever
    `workers` (a spawned process pool).
    """
    if n < MIN_IMAGES or workers < 1 or per_folder < 1:
        raise ValueError(f"{n} images, workers {workers}, {per_folder} per folder: the 80/10/10 "
                         f"split needs at least {MIN_IMAGES} images for every split to have one, "
                         "and workers and per_folder must be at least 1")
    spec = spec_for(resolution, contour_length)
    leaf = Path(out_dir) / f"pathfinder{resolution}" / spec.folder
    (leaf / "imgs").mkdir(parents=True, exist_ok=True)
    (leaf / "metadata").mkdir(parents=True, exist_ok=True)
    jobs = [(spec, str(leaf), seed, b, min(per_folder, n - b * per_folder))
            for b in range(-(-n // per_folder))]
    with tqdm(total=n, desc=f"pathfinder{resolution}", unit=" images", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                _write_batch(job)
                bar.update(job[-1])
        else:
            # workers ignore Ctrl+C: the parent alone stops, and the pool ends with it
            with multiprocessing.get_context("spawn").Pool(
                    workers, signal.signal, (signal.SIGINT, signal.SIG_IGN)) as pool:
                for batch in pool.imap_unordered(_write_batch, jobs):
                    bar.update(jobs[batch][-1])
    return leaf

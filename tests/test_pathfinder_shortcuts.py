"""The fast Pathfinder generator's shortcuts each give what the original's way of computing gives,
including at the edges where a shortcut hands over to the original's way (the whole process is
compared with the slow reference in test_pathfinder_generator.py)."""
from dataclasses import replace

import numpy as np
import pytest

from lra.generators.pathfinder import (
    OVERLAP,
    PRESETS,
    _kit,
    _marker,
    _pick,
    dilate,
    marker,
    spec_for,
    window,
)
from lra.generators.reference import _frame_paddle

PATHX_LIKE = replace(PRESETS[128], resolution=80, seed_distance=13)


def original_pick(pmf, r):
    """The original's pick: argmax(cumsum(pmf / sum(pmf)) - r > 0), 0 where none is above r."""
    return int(np.argmax(np.cumsum(pmf / np.sum(pmf)) - r > 0))


def test_pick_is_the_originals_even_where_the_draw_lands_on_a_step():
    rng = np.random.default_rng(0)
    checked = 0
    for n in [1, 2, 7, 8, 9, 17, 44, 60] * 25:
        pmf = rng.random(n) * (rng.random(n) < 0.7) * 10.0 ** rng.integers(-6, 1)
        pmf[rng.integers(0, n)] += 1e-3  # the original gives up below a sum of 1e-4
        steps = np.cumsum(pmf / np.sum(pmf))  # the original's steps, and draws on and beside them
        draws = [0.0, 1 - 2 ** -53, *rng.random(5),
                 *steps, *np.nextafter(steps, 0), *np.nextafter(steps, 1)]
        cmf = np.add.accumulate(pmf)
        for r in draws:
            if r < 1:
                assert _pick(pmf, cmf, cmf.item(-1), float(r)) == original_pick(pmf, r), (pmf, r)
                checked += 1
    assert checked > 10_000


@pytest.mark.parametrize("spec", [spec_for(32), spec_for(128)], ids=["32px", "128px"])
def test_marker_from_a_stamp_is_the_originals_marker(spec):
    res = spec.resolution
    near_edges = [*range(16), *range(res - 16, res)]
    points = ([(y, x) for y in range(res) for x in range(res)] if res <= 32 else
              [(y, x) for y in near_edges for x in (0, 9, 11, 40, 64, 117, 127)]
              + [(64, x) for x in near_edges])
    for point in points:
        assert np.array_equal(_marker(res, point, spec.marker_radius, spec.antialias),
                              marker(res, point, spec.marker_radius, spec.antialias)), point


def crowded_state(kit, rng, count):
    """A state with `count` paddles merged at random: crowded in the middle, some on the edges."""
    state, res = kit.empty.copy(), kit.res
    for _ in range(count):
        if rng.random() < 0.8:
            start = tuple(rng.integers(res // 3, 2 * res // 3, 2))
        else:
            start = tuple(rng.integers(0, res, 2))
        kit.paddle(kit.turned[rng.integers(0, len(kit.turned))]).merge(state, start)
    return state


@pytest.mark.parametrize("spec, margin", [(spec_for(32), 1), (PATHX_LIKE, 3)],
                         ids=["32px", "pathx-like"])
def test_fits_is_the_originals_overlap_test(spec, margin):
    kit, rng, res = _kit(spec, margin), np.random.default_rng(1), spec.resolution
    outcomes = set()
    for _ in range(8):
        state = crowded_state(kit, rng, 12)
        mask = -state[..., 0]
        for _ in range(60):
            start = tuple(int(c) for c in rng.integers(0, res, 2))
            angle = kit.turned[rng.integers(0, len(kit.turned))]
            paddle = kit.paddle(angle)
            # the paddle's mask in a whole frame, as the original placed it
            cover = np.zeros((res, res), np.float32)
            frame, part = window(start, kit.reach, (res, res))
            cover[frame] = paddle.mask[part]
            fits = paddle.fits(state.reshape(-1), start)
            assert fits == (np.max(mask + cover) < OVERLAP), (start, angle)
            outcomes.add(fits)
    assert outcomes == {True, False}


@pytest.mark.parametrize("spec, margin", [(spec_for(32), 1), (PATHX_LIKE, 2)],
                         ids=["32px", "pathx-like"])
def test_free_starts_are_the_originals_free_pixels(spec, margin):
    kit, rng = _kit(spec, margin), np.random.default_rng(2)
    lined = -crowded_state(kit, rng, 6)[..., 0]
    lined[0], lined[-1], lined[:, 0], lined[:, -1] = 1, 1, 1, 1
    reach = spec.paddle_length + margin
    found = 0
    for degrees in range(-180, 180, 7):
        angle = degrees * np.pi / 180
        kernel = _frame_paddle((2 * reach + 1,) * 2, (reach + 1, reach + 1), angle, spec, margin)[1]
        # the original's, -inf where the kernel misses
        taken = np.ceil(dilate(lined, kernel.astype(np.uint8)) - 0.3)
        expected = np.flatnonzero(taken == 0) if taken.min() >= 0 else []
        assert np.array_equal(kit.free_starts(lined > 0.3, angle), expected), degrees
        found += len(expected) > 0
    assert found > 0

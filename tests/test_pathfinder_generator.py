"""The Pathfinder generator: the original's process (same images as the slow reference), the
release's statistics, labels, the release layout, determinism."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import loaded
from writers import PATHFINDER_HARD as HARD

from lra.generators.pathfinder import PRESETS, draw, prepare_pathfinder, sample, spec_for
from lra.generators.reference import pathfinder_image
from lra.tasks.pathfinder import Pathfinder

N_IMAGES = 300


@pytest.fixture(scope="module")
def drawn():
    spec = spec_for(32)
    return [sample(spec, 0, 0, i, i % 2) for i in range(N_IMAGES)]


@pytest.mark.parametrize("spec, seeds", [
    (spec_for(32), [(1, 0), (1, 1)]),
    # Path-X's settings (margins 2 and 3, thicker lines, continuity 1.8) in a smaller window
    (replace(PRESETS[128], resolution=80, seed_distance=13, contour_length=6,
             distractor_paddles=8), [(1, 1), (2, 0)]),
], ids=["32px", "pathx-like"])
def test_fast_generator_draws_what_the_slow_reference_draws(spec, seeds):
    for seed, label in seeds:
        fast = draw(spec, np.random.default_rng(seed), label)
        slow = pathfinder_image(spec, np.random.default_rng(seed), label)
        assert np.array_equal(fast.pixels, slow.pixels)
        assert np.array_equal(fast.dots, slow.dots)
        assert fast.margin == slow.margin and fast.label == label
        assert len(fast.contours) == len(slow.contours)
        assert all(np.array_equal(a, b) for a, b in zip(fast.contours, slow.contours))


def test_statistics_match_the_release(drawn):
    # The released 32 px hard images: mean pixel 20.3 (sd 2.1 across images), 34% of pixels > 0,
    # 8.6% > 127, max 255 in every image, the same mean for both labels.
    x = np.stack([d.pixels for d in drawn]).astype(np.float64)
    means = x.mean(axis=(1, 2))
    assert abs(x.mean() - 20.3) < 1.0
    assert 1.6 < means.std() < 2.6
    assert abs((x > 0).mean() - 0.34) < 0.015
    assert abs((x > 127).mean() - 0.086) < 0.006
    assert (x.max(axis=(1, 2)) == 255).all()
    labels = np.array([d.label for d in drawn])
    spread = means.std() * np.sqrt(1 / (labels == 0).sum() + 1 / (labels == 1).sum())
    gap = means[labels == 1].mean() - means[labels == 0].mean()
    assert abs(gap) < 3 * spread  # no label-dependent ink
    # distractors are left out where they do not fit, as in the original: their number varies
    assert len({len(d.contours) for d in drawn}) >= 3


def raster(paddles, shape):
    """Pixels on a contour: its paddles' segments and the links between consecutive paddles'
    nearest ends, sampled every 0.1 px."""
    points = [p for paddle in paddles for p in paddle]
    links = [min(((a, b) for a in first for b in second), key=lambda ab: np.hypot(*(ab[0] - ab[1])))
             for first, second in zip(paddles, paddles[1:])]
    out = np.zeros(shape, bool)
    for a, b in [*(tuple(p) for p in paddles), *links]:
        for t in np.linspace(0, 1, 10 * int(np.ceil(np.hypot(*(b - a)))) + 1):
            y, x = np.rint(a + t * (b - a)).astype(int)
            if 0 <= y < shape[0] and 0 <= x < shape[1]:
                out[y, x] = True
    assert len(points) == 2 * len(paddles)
    return out


def flood(mask, start):
    """Pixels of `mask` 8-connected to `start`."""
    reach = np.zeros_like(mask)
    reach[start] = mask[start]
    while True:
        grown = reach.copy()
        grown[1:] |= grown[:-1].copy()
        grown[:-1] |= grown[1:].copy()
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        grown &= mask
        if np.array_equal(grown, reach):
            return reach
        reach = grown


def test_dots_are_joined_along_a_contour_only_when_positive(drawn):
    for d in drawn:
        a, b = (tuple(int(c) for c in dot) for dot in d.dots)
        assert d.pixels[a] > 200 and d.pixels[b] > 200  # the dots are drawn
        for contour in d.contours:  # every recorded paddle is drawn where it starts
            assert all(d.pixels[tuple(start)] > 100 for start, _ in contour)
        ends = [{tuple(c[0, 0]), tuple(c[-1, 0])} for c in d.contours[:2]]  # the targets' far ends
        [on_a] = [i for i in (0, 1) if a in ends[i]]
        [on_b] = [i for i in (0, 1) if b in ends[i]]
        reached = flood(raster(d.contours[on_a], d.pixels.shape), a)
        assert reached[b] == bool(d.label) == (on_a == on_b), d.label


def test_every_resolution_has_a_preset():
    for resolution in (64, 128, 256):
        d = sample(spec_for(resolution), 0, 0, 0, 1)
        assert d.pixels.shape == (resolution, resolution) and d.pixels.max() == 255
        assert len(d.contours[0]) == len(d.contours[1]) == 14
    assert len(sample(spec_for(32, contour_length=6), 0, 0, 0, 0).contours[0]) == 6
    with pytest.raises(ValueError, match=r"resolution 48; choose one of \[32, 64, 128, 256\]"):
        spec_for(48)


def test_release_layout_is_seeded_the_same_for_any_workers_and_read_by_the_loader(tmp_path):
    kwargs = dict(resolution=32, n=50, per_folder=20, seed=3, progress=False)
    leaves = {name: prepare_pathfinder(tmp_path / name, workers=w, **kwargs)
              for name, w in (("a", 1), ("b", 2))}
    files = {name: {p.relative_to(leaf): p.read_bytes()
                    for p in sorted(leaf.rglob("*")) if p.is_file()}
             for name, leaf in leaves.items()}
    assert files["a"] == files["b"]  # same seed, any number of workers
    metadata = sorted(p.name for p in files["a"] if p.parts[0] == "metadata")
    assert metadata == ["0.npy", "1.npy", "2.npy"]
    assert leaves["a"] == tmp_path / "a" / "pathfinder32" / HARD
    lines = files["a"][Path("metadata/2.npy")].decode().splitlines()
    assert len(lines) == 10 and all(len(line.split()) == 11 for line in lines)
    assert lines[0].split()[:3] == ["imgs/2", "sample_0.png", "0"]
    # continuity, lengths, paddle, thickness, margin, contrasts
    assert lines[0].split()[4:] == ["1.0", "14", "4", "2", "0.5", "1", "1"]
    labels = [int(line.split()[3]) for m in ("0", "1")
              for line in files["a"][Path(f"metadata/{m}.npy")].decode().splitlines()]
    assert sum(labels) == 20  # half of each batch folder
    data = loaded(Pathfinder, tmp_path / "a")
    assert data.protocol["images"] == 50
    assert data.protocol["sizes"] == {"train": 40, "val": 5, "test": 5}
    tokens = np.concatenate([data.splits[s].inputs for s in ("train", "val", "test")])
    first = sample(spec_for(32), 3, 0, 0, labels[0]).pixels.reshape(-1)
    assert (tokens == first).all(axis=1).sum() == 1  # image (0, 0) is what `sample` draws
    # complete: nothing redone
    assert prepare_pathfinder(tmp_path / "a", workers=1, **kwargs) == leaves["a"]
    other = prepare_pathfinder(tmp_path / "c", workers=1, **{**kwargs, "seed": 4})
    assert (other / "imgs/0/sample_0.png").read_bytes() != files["a"][Path("imgs/0/sample_0.png")]


def test_cli_generates_any_resolution_and_pathx_is_128(lra, tmp_path):
    made = lra("data", "generate", "pathfinder", "--resolution", "64", "--n", "10",
               "--data-dir", "d", "--workers", "1")
    assert made.code == 0, made.err
    assert len(list((tmp_path / "d/pathfinder/pathfinder64" / HARD / "imgs/0").glob("*.png"))) == 10
    assert "lra data prepare pathfinder task.resolution=64 --data-dir d" in made.out
    wrong = lra("data", "generate", "pathx", "--resolution", "32", "--n", "3", "--data-dir", "d")
    assert wrong.code == 2 and "Path-X is the 128 px Pathfinder" in wrong.err

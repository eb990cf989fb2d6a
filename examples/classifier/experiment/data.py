"""The fixed benchmark: noisy interleaved spirals plus irrelevant features.

This file defines the *problem*, not the model.  Everything here is constant:
the data seed does not come from params.json, so every run (whatever its
parameters) sees exactly the same train / test split and scores are
comparable.  Changing this file changes the benchmark; don't do it to win.

Each example has 2 informative coordinates (a point on one of N_CLASSES
spiral arms, jittered by Gaussian noise) followed by N_NOISE_FEATURES
coordinates of pure noise that carry no information about the label.
A good model has to find the curved class boundaries in the first two
coordinates and learn to ignore the rest.
"""

import math
import random

N_CLASSES = 2           # spiral arms, one class each
TURNS = 1.0             # how many times each arm winds around the centre
POINT_NOISE = 0.05      # std-dev of Gaussian jitter added to (x, y)
N_NOISE_FEATURES = 2    # irrelevant N(0, 0.5^2) features appended to each point
N_TRAIN = 300           # training examples (balanced across classes)
N_TEST = 500            # held-out examples used for the reported accuracy
DATA_SEED = 20240611    # fixed: the data never depend on params.json


def _spiral_point(rng, label):
    """One noisy point on arm `label`, plus the irrelevant features."""
    t = rng.random()                                   # position along the arm
    radius = 0.15 + 0.85 * t                           # arms spiral outwards
    angle = 2.0 * math.pi * (TURNS * t + label / N_CLASSES)
    x = radius * math.cos(angle) + rng.gauss(0.0, POINT_NOISE)
    y = radius * math.sin(angle) + rng.gauss(0.0, POINT_NOISE)
    noise = [rng.gauss(0.0, 0.5) for _ in range(N_NOISE_FEATURES)]
    return [x, y] + noise


def _sample(rng, n):
    """n examples with labels cycling 0, 1, ..., K-1 (so classes are balanced)."""
    xs, ys = [], []
    for i in range(n):
        label = i % N_CLASSES
        xs.append(_spiral_point(rng, label))
        ys.append(label)
    return xs, ys


def load():
    """Return (x_train, y_train, x_test, y_test); lists of float lists / ints."""
    rng = random.Random(DATA_SEED)
    x_train, y_train = _sample(rng, N_TRAIN)
    x_test, y_test = _sample(rng, N_TEST)
    return x_train, y_train, x_test, y_test


if __name__ == "__main__":
    # Quick look at the data: python3 data.py  -> prints a coarse ASCII plot.
    xtr, ytr, _, _ = load()
    size = 41
    grid = [[" "] * size for _ in range(size)]
    for (x, y, *_), label in zip(xtr, ytr):
        col = int((x + 1.2) / 2.4 * (size - 1))
        row = int((1.2 - y) / 2.4 * (size - 1))
        if 0 <= row < size and 0 <= col < size:
            grid[row][col] = "ox+*#"[label % 5]
    print("\n".join("".join(r) for r in grid))

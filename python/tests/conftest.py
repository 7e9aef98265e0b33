"""Shared fixtures: a fresh database directory per test and random data helpers."""

import numpy as np
import pytest

import trajdb


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def db(path):
    with trajdb.open(path) as d:
        yield d


def unit(rng, dims):
    v = rng.standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


def similarity(metric, rows, q):
    """Reference similarities of every row of ``rows`` (n, d) to ``q`` (d,), in float64."""
    rows = rows.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "dot":
        return rows @ q
    if metric == "cosine":
        return (rows @ q) / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
    return -np.linalg.norm(rows - q, axis=1)

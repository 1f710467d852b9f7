"""The held-out evaluation split: sizes, stratification by hand, determinism, input checks."""

from __future__ import annotations

import pytest

from ecolora.data.sources import split_train_eval


def _rows(sizes: dict[str | None, int]) -> list[dict[str, object]]:
    return [
        {"instruction": f"{cat}-{i}", "input": "", "output": "x", "category": cat}
        for cat, n in sizes.items()
        for i in range(n)
    ]


def _count(rows: list[dict[str, object]]) -> dict[object, int]:
    counts: dict[object, int] = {}
    for row in rows:
        counts[row["category"]] = counts.get(row["category"], 0) + 1
    return counts


def test_proportional_strata() -> None:
    rows = _rows({"a": 50, "b": 30, "c": 20})
    train, held = split_train_eval(rows, 10, seed=0)
    assert _count(held) == {"a": 5, "b": 3, "c": 2}
    assert len(train) == 90
    assert {id(r) for r in train}.isdisjoint(id(r) for r in held)
    assert train == [r for r in rows if r not in held]  # original order kept


def test_largest_remainder() -> None:
    # quotas 3 * (5, 3, 2) / 10 = 1.5, 0.9, 0.6 -> floors 1, 0, 0; two left -> b (0.9), c (0.6)
    train, held = split_train_eval(_rows({"a": 5, "b": 3, "c": 2}), 3, seed=0)
    assert _count(held) == {"a": 1, "b": 1, "c": 1}


def test_fraction_and_determinism() -> None:
    rows = _rows({"a": 40, None: 60})
    _, held = split_train_eval(rows, 0.25, seed=5)
    assert _count(held) == {"a": 10, None: 15}
    assert held == split_train_eval(rows, 0.25, seed=5)[1]
    assert held != split_train_eval(rows, 0.25, seed=6)[1]
    assert len(split_train_eval(rows, 0.001, seed=0)[1]) == 1  # a positive fraction holds out >= 1
    assert split_train_eval(rows, 0, seed=0) == (rows, [])


def test_input_checks() -> None:
    rows = _rows({"a": 4})
    with pytest.raises(ValueError, match=r"must be in \[0, 1\), got 1.0; pass an int"):
        split_train_eval(rows, 1.0, seed=0)
    with pytest.raises(
        ValueError, match=r"must leave at least one training row: it gives 4 held-out rows of 4"
    ):
        split_train_eval(rows, 4, seed=0)
    with pytest.raises(ValueError, match=r"`eval_size` must be >= 0, got -1"):
        split_train_eval(rows, -1, seed=0)
    with pytest.raises(TypeError, match=r"`eval_size` must be an int or a float, got bool"):
        split_train_eval(rows, True, seed=0)

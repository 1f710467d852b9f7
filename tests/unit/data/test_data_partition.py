"""Partitioners: checks at construction, determinism, and splits worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ecolora.data.kmeans import kmeans_labels
from ecolora.data.partition import (
    DirichletPartitioner,
    IidPartitioner,
    TaskPartitioner,
    make_partitioner,
    partition_stats,
)


def _rows(sizes: dict[str, int]) -> list[dict[str, object]]:
    return [
        {"instruction": f"{cat} {i}", "input": "", "output": "x", "category": cat, "task": None}
        for cat, n in sizes.items()
        for i in range(n)
    ]


def _all_partitions(partitioner: object) -> list[list[int]]:
    return [partitioner.load_partition(i) for i in range(partitioner.num_partitions)]  # type: ignore[attr-defined]


def _assert_exact_cover(parts: list[list[int]], num_examples: int) -> None:
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(num_examples))
    assert all(p == sorted(p) for p in parts)


def test_iid_is_balanced_disjoint_and_seeded() -> None:
    parts = _all_partitions(IidPartitioner(103, 10, seed=1))
    _assert_exact_cover(parts, 103)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert parts == _all_partitions(IidPartitioner(103, 10, seed=1))
    assert parts != _all_partitions(IidPartitioner(103, 10, seed=2))


def test_more_clients_than_samples_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"5 partitions of at least 1 example\(s\) need 5 examples, got 3"
    ):
        IidPartitioner(3, 5)
    with pytest.raises(ValueError, match=r"need 20 examples, got 12; use fewer clients"):
        make_partitioner("dirichlet", _rows({"a": 6, "b": 6}), 4, seed=0, min_partition_size=5)
    with pytest.raises(ValueError, match=r"`num_partitions` must be >= 1, got 0"):
        IidPartitioner(3, 0)
    with pytest.raises(TypeError, match=r"`seed` must be an int, got float"):
        IidPartitioner(3, 1, seed=0.5)  # type: ignore[arg-type]


def test_load_partition_checks_the_id() -> None:
    partitioner = IidPartitioner(10, 2)
    with pytest.raises(ValueError, match=r"`partition_id` must be in \[0, 1\], got 2"):
        partitioner.load_partition(2)


def test_dirichlet_matches_the_documented_algorithm() -> None:
    labels = ["b"] * 30 + ["a"] * 50 + ["c"] * 20
    alpha, num_clients, seed = 0.5, 4, 7
    partitioner = DirichletPartitioner(labels, num_clients, alpha=alpha, seed=seed)
    # steps 1-3 of the docstring, by hand, labels in sorted order
    rng = np.random.default_rng(seed)
    expected: list[list[int]] = [[] for _ in range(num_clients)]
    for label in ["a", "b", "c"]:
        members = rng.permutation([i for i, x in enumerate(labels) if x == label])
        shares = rng.dirichlet([alpha] * num_clients)
        bounds = [0] + [int(np.floor(c * len(members))) for c in np.cumsum(shares)[:-1]]
        bounds.append(len(members))
        for client in range(num_clients):
            expected[client] += members[bounds[client] : bounds[client + 1]].tolist()
    assert all(len(p) > 0 for p in expected)  # so the first draw is the one kept
    assert _all_partitions(partitioner) == [sorted(p) for p in expected]


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    rows = _rows({c: 100 for c in "abcdefgh"})

    def mean_categories_per_client(alpha: float) -> float:
        stats = partition_stats(rows, make_partitioner("dirichlet", rows, 8, seed=0, alpha=alpha))
        return float(
            np.mean([sum(v > 0 for v in c["category_counts"].values()) for c in stats["clients"]])
        )

    assert mean_categories_per_client(0.05) < 4 < mean_categories_per_client(100.0) == 8


def test_dirichlet_redraws_until_min_partition_size() -> None:
    labels = ["a"] * 40 + ["b"] * 40
    # seed 0's first draw leaves a client below 8 examples (checked by hand below)
    rng = np.random.default_rng(0)
    first = []
    for _ in "ab":
        rng.permutation(40)
        cuts = np.floor(np.cumsum(rng.dirichlet([0.5] * 4))[:-1] * 40)
        first.append(np.diff(np.r_[0, cuts, 40]))
    assert (np.sum(first, axis=0) < 8).any()
    sizes = DirichletPartitioner(
        labels, 4, alpha=0.5, seed=0, min_partition_size=8
    ).partition_sizes()
    assert min(sizes) >= 8 and sum(sizes) == 80


def test_dirichlet_gives_up_with_a_clear_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"alpha=0.01\) left a client with fewer than `min_partition_size`=9 .*after 10 tries",
    ):
        DirichletPartitioner(["a"] * 50 + ["b"] * 50, 10, alpha=0.01, min_partition_size=9)
    with pytest.raises(ValueError, match=r"`alpha` must be a finite number > 0, got 0"):
        DirichletPartitioner(["a", "b"], 2, alpha=0)
    with pytest.raises(ValueError, match=r"`alpha` must be a finite number > 0, got nan"):
        DirichletPartitioner(["a", "b"], 2, alpha=float("nan"))


def test_task_one_client_per_category() -> None:
    labels = ["y"] * 3 + ["x"] * 2
    assert _all_partitions(TaskPartitioner(labels, 2)) == [[3, 4], [0, 1, 2]]


def test_task_more_clients_than_categories_splits_by_dhondt() -> None:
    rows = _rows({"a": 60, "b": 30, "c": 10})
    stats = partition_stats(rows, make_partitioner("task", rows, 5, seed=3))
    by_client = [{k: v for k, v in c["category_counts"].items() if v} for c in stats["clients"]]
    # D'Hondt: a=60/1 -> a gets 2nd client; then a=30 vs b=30 tie -> first (a) gets the 3rd
    assert by_client == [{"a": 20}, {"a": 20}, {"a": 20}, {"b": 30}, {"c": 10}]


def test_task_fewer_clients_than_categories_groups_whole_categories() -> None:
    rows = _rows({"a": 50, "b": 30, "c": 20, "d": 10})
    stats = partition_stats(rows, make_partitioner("task", rows, 2, seed=0))
    assert [c["category_counts"] for c in stats["clients"]] == [
        {"a": 50, "b": 0, "c": 0, "d": 10},
        {"a": 0, "b": 30, "c": 20, "d": 0},
    ]


def test_category_partitioners_need_categories() -> None:
    rows = _rows({"a": 5})
    rows[2]["category"] = None
    for name in ("dirichlet", "task"):
        with pytest.raises(
            ValueError, match=rf"`{name}` partitioner needs a `category` on every row; 1 of 5 rows"
        ):
            make_partitioner(name, rows, 2, seed=0)
    with pytest.raises(
        ValueError, match=r"Unknown partitioner 'shards'; known: iid, dirichlet, task, kmeans"
    ):
        make_partitioner("shards", rows, 2, seed=0)


_TOPICS = {
    "cooking": "boil pasta with salted water then add tomato sauce and basil",
    "football": "the striker kicked the ball past the goalkeeper into the goal net",
    "astronomy": "the telescope observed a distant galaxy nebula and bright stars",
}


def _topic_rows() -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    rows = []
    for topic, text in _TOPICS.items():
        words = text.split()
        for _ in range(20):
            picked = " ".join(rng.choice(words, size=6))
            rows.append(
                {
                    "instruction": picked,
                    "input": "",
                    "output": "x",
                    "category": None,
                    "topic": topic,
                }
            )
    return rows


def test_kmeans_finds_the_topics_and_is_seeded() -> None:
    rows = _topic_rows()
    labels = kmeans_labels(rows, 3, seed=0)
    by_topic = {
        t: {lab for lab, r in zip(labels, rows, strict=True) if r["topic"] == t} for t in _TOPICS
    }
    assert all(len(v) == 1 for v in by_topic.values())
    assert len(set.union(*by_topic.values())) == 3
    assert labels == kmeans_labels(rows, 3, seed=0)


def test_kmeans_partitioner_reports_clusters_for_rows_without_category() -> None:
    rows = _topic_rows()
    partitioner = make_partitioner("kmeans", rows, 4, seed=0, num_clusters=3, alpha=0.5)
    stats = partition_stats(rows, partitioner)
    assert stats["categories"] == ["cluster_00", "cluster_01", "cluster_02"]
    assert sum(c["num_examples"] for c in stats["clients"]) == 60
    _assert_exact_cover(_all_partitions(partitioner), 60)


def test_kmeans_reads_the_prompt_of_preference_rows() -> None:
    rows = [
        {"prompt": r["instruction"], "chosen": "a", "rejected": "b", "category": None}
        for r in _topic_rows()
    ]
    assert kmeans_labels(rows, 3, seed=0) == kmeans_labels(_topic_rows(), 3, seed=0)


def test_kmeans_input_checks() -> None:
    rows = _topic_rows()[:2]
    with pytest.raises(ValueError, match=r"`num_clusters` \(3\) exceeds the number of rows \(2\)"):
        kmeans_labels(rows, 3, seed=0)
    stop_words = [{"instruction": "the and of", "input": ""}] * 3
    with pytest.raises(ValueError, match=r"TF-IDF found no usable words in the 3 rows"):
        kmeans_labels(stop_words, 2, seed=0)


def test_partition_stats_counts_by_hand() -> None:
    rows = _rows({"a": 2, "b": 1})
    stats = partition_stats(rows, TaskPartitioner([r["category"] for r in rows], 2))
    assert stats == {
        "num_examples": 3,
        "num_partitions": 2,
        "categories": ["a", "b"],
        "clients": [
            {"partition_id": 0, "num_examples": 2, "category_counts": {"a": 2, "b": 0}},
            {"partition_id": 1, "num_examples": 1, "category_counts": {"a": 0, "b": 1}},
        ],
    }
    with pytest.raises(ValueError, match=r"`rows` has 2 entries but the partitioner split 3"):
        partition_stats(rows[:2], TaskPartitioner(["a", "a", "b"], 2))

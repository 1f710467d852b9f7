"""Non-IID partitioners: split example indices among federated clients.

All partitioners follow flwr-datasets' interface (``num_partitions``, ``load_partition``) and
its ``DirichletPartitioner`` algorithm, but are written here over plain index arrays:
``flwr-datasets`` 0.6.1 cannot be installed next to this project's pins (it would downgrade
``datasets`` 5.2.0 to 4.8.5, ``huggingface_hub``, ``fsspec`` and ``rich``; see docs/data.md).

Partitions are computed once, at construction, from ``np.random.default_rng(seed)``, so the
same inputs and seed always give the same split and every input error surfaces immediately.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from ecolora.data.checks import check_int
from ecolora.data.kmeans import kmeans_labels

logger = logging.getLogger("ecolora")

__all__ = [
    "PARTITIONERS",
    "DirichletPartitioner",
    "IidPartitioner",
    "Partitioner",
    "TaskPartitioner",
    "make_partitioner",
    "partition_stats",
    "resolve_partition",
]

PARTITIONERS = ("iid", "dirichlet", "task", "kmeans")


class Partitioner(ABC):
    """Base class: ``num_examples`` indices split into ``num_partitions`` non-empty partitions.

    Subclasses set their own attributes, then call ``super().__init__``, which validates the
    sizes, seeds ``self._rng`` and calls :meth:`_build` once.

    Args:
        num_examples: how many examples (rows) there are; partitions hold indices into them.
        num_partitions: how many clients.
        seed: seed of ``np.random.default_rng``.
        min_partition_size: every partition must hold at least this many examples.
    """

    def __init__(
        self, num_examples: int, num_partitions: int, *, seed: int = 0, min_partition_size: int = 1
    ) -> None:
        check_int("num_partitions", num_partitions, minimum=1)
        check_int("seed", seed, minimum=0)
        check_int("min_partition_size", min_partition_size, minimum=1)
        need = num_partitions * min_partition_size
        if need > num_examples:
            raise ValueError(
                f"{num_partitions} partitions of at least {min_partition_size} example(s) need "
                f"{need} examples, got {num_examples}; use fewer clients (`num_partitions`), a "
                "smaller `min_partition_size`, or more data."
            )
        self._num_examples = num_examples
        self._num_partitions = num_partitions
        self._min_partition_size = min_partition_size
        self._rng = np.random.default_rng(seed)
        owner = self._build()  # (num_examples,) partition id of each example
        sizes = np.bincount(owner, minlength=num_partitions)
        small = np.flatnonzero(sizes < min_partition_size)
        if small.size:
            raise ValueError(
                f"{type(self).__name__} would give partition(s) {small.tolist()} fewer than "
                f"`min_partition_size`={min_partition_size} examples (sizes "
                f"{sizes[small].tolist()}); use fewer clients or more data."
            )
        order = np.argsort(owner, kind="stable")  # indices grouped by partition, ascending
        self._partitions = np.split(order, np.cumsum(sizes)[:-1])

    @property
    def num_partitions(self) -> int:
        """Number of partitions (clients)."""
        return self._num_partitions

    @property
    def num_examples(self) -> int:
        """Number of examples that were partitioned."""
        return self._num_examples

    @property
    def labels(self) -> list[str] | None:
        """The label of each example the split was based on, or ``None`` (IID)."""
        return None

    def load_partition(self, partition_id: int) -> list[int]:
        """Sorted indices (into the partitioned rows) of partition ``partition_id``."""
        if isinstance(partition_id, bool) or not isinstance(partition_id, (int, np.integer)):
            raise TypeError(f"`partition_id` must be an int, got {type(partition_id).__name__}.")
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(
                f"`partition_id` must be in [0, {self._num_partitions - 1}], got {partition_id}."
            )
        indices: list[int] = self._partitions[partition_id].tolist()
        return indices

    def partition_sizes(self) -> list[int]:
        """Number of examples in each partition."""
        return [len(p) for p in self._partitions]

    @abstractmethod
    def _build(self) -> np.ndarray:
        """Return the partition id of every example, shape ``(num_examples,)``, dtype int."""


class IidPartitioner(Partitioner):
    """Uniform split: a seeded permutation cut into ``num_partitions`` near-equal parts."""

    def _build(self) -> np.ndarray:
        owner = np.empty(self._num_examples, dtype=np.int64)
        owner[self._rng.permutation(self._num_examples)] = (
            np.arange(self._num_examples) * self._num_partitions // self._num_examples
        )
        return owner


class _LabelPartitioner(Partitioner):
    """A partitioner driven by one label per example (a category, a task, a cluster)."""

    def __init__(
        self,
        labels: Sequence[Hashable],
        num_partitions: int,
        *,
        seed: int = 0,
        min_partition_size: int = 1,
    ) -> None:
        if len(labels) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one example, got none.")
        if any(label is None for label in labels):
            raise ValueError(f"{type(self).__name__} needs a label on every example; got None.")
        names, codes = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
        self._label_names: list[str] = names.tolist()
        self._codes = codes.reshape(-1)  # (num_examples,) int label code
        super().__init__(
            len(labels), num_partitions, seed=seed, min_partition_size=min_partition_size
        )

    @property
    def labels(self) -> list[str]:
        return [self._label_names[c] for c in self._codes]

    def _shuffled_members(self, code: int) -> np.ndarray:
        return self._rng.permutation(np.flatnonzero(self._codes == code))


class DirichletPartitioner(_LabelPartitioner):
    """Label-skewed split: per label, client shares drawn from ``Dir(alpha)``.

    The FedIT / EcoLoRA non-IID setting (Hsu et al., 2019, arXiv:1909.06335; flwr-datasets'
    ``DirichletPartitioner``, ``self_balancing=False``). For each label ``k`` with ``n_k``
    examples:

    1. shuffle the examples of ``k``;
    2. draw ``p_k ~ Dir(alpha * 1_N)`` over the ``N`` clients;
    3. give client ``i`` the examples between positions ``floor(n_k * sum_{j<i} p_kj)`` and
       ``floor(n_k * sum_{j<=i} p_kj)``.

    Smaller ``alpha`` means more skew (EcoLoRA's default is 0.5). If a client ends up with
    fewer than ``min_partition_size`` examples, all labels are redrawn, up to ``max_tries``
    times (like flwr-datasets), then a ``ValueError`` says what to change.

    Args:
        labels: the label of each example (category or cluster).
        num_partitions: number of clients.
        alpha: Dirichlet concentration, > 0.
        seed: seed of ``np.random.default_rng``.
        min_partition_size: the smallest acceptable partition.
        max_tries: how many draws to try.
    """

    def __init__(
        self,
        labels: Sequence[Hashable],
        num_partitions: int,
        *,
        alpha: float = 0.5,
        seed: int = 0,
        min_partition_size: int = 1,
        max_tries: int = 10,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"`alpha` must be a number, got {type(alpha).__name__}.")
        if not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"`alpha` must be a finite number > 0, got {alpha}.")
        check_int("max_tries", max_tries, minimum=1)
        self.alpha = float(alpha)
        self._max_tries = max_tries
        super().__init__(labels, num_partitions, seed=seed, min_partition_size=min_partition_size)

    def _build(self) -> np.ndarray:
        num_clients = self._num_partitions
        owner = np.empty(self._num_examples, dtype=np.int64)
        for attempt in range(1, self._max_tries + 1):
            for code in range(len(self._label_names)):
                members = self._shuffled_members(code)
                shares = self._rng.dirichlet(np.full(num_clients, self.alpha))  # (N,)
                cuts = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
                bounds = np.concatenate(([0], np.minimum(cuts, len(members)), [len(members)]))
                owner[members] = np.repeat(np.arange(num_clients), np.diff(bounds))
            smallest = int(np.bincount(owner, minlength=num_clients).min())
            if smallest >= self._min_partition_size:
                return owner
            logger.debug("Dirichlet draw %d: smallest partition %d, retrying", attempt, smallest)
        raise ValueError(
            f"Dirichlet partitioning (alpha={self.alpha}) left a client with fewer than "
            f"`min_partition_size`={self._min_partition_size} examples after {self._max_tries} "
            "tries; use fewer clients, a larger `alpha`, or a smaller `min_partition_size`."
        )


class TaskPartitioner(_LabelPartitioner):
    """Task-domain split: every client holds examples of a single label (category or task).

    * ``N == C`` (clients == labels): client ``i`` gets all of the ``i``-th label (sorted).
    * ``N > C``: each label gets at least one client; the extra ``N - C`` clients go one at a
      time to the label with the most examples per client (D'Hondt rule), and a label's
      examples are shuffled and cut into near-equal shares. Clients of one label are numbered
      consecutively, labels in sorted order. Every client still sees one domain only.
    * ``N < C``: clients cannot each get one label, so whole labels are grouped: largest label
      first, each to the client with the fewest examples so far. No label is split.

    Args:
        labels: the label of each example.
        num_partitions: number of clients.
        seed: seed of the shuffles inside a label.
        min_partition_size: the smallest acceptable partition.
    """

    def _build(self) -> np.ndarray:
        num_labels = len(self._label_names)
        label_sizes = np.bincount(self._codes, minlength=num_labels)
        owner = np.empty(self._num_examples, dtype=np.int64)
        if self._num_partitions < num_labels:
            client_sizes = np.zeros(self._num_partitions, dtype=np.int64)
            client_of_label = np.empty(num_labels, dtype=np.int64)
            for code in np.argsort(-label_sizes, kind="stable"):
                client = int(np.argmin(client_sizes))
                client_of_label[code] = client
                client_sizes[client] += label_sizes[code]
            return client_of_label[self._codes]
        clients_per_label = _dhondt(label_sizes, self._num_partitions)
        first_client = np.concatenate(([0], np.cumsum(clients_per_label)[:-1]))
        for code in range(num_labels):
            members = self._shuffled_members(code)
            share = np.arange(len(members)) * clients_per_label[code] // len(members)
            owner[members] = first_client[code] + share
        return owner


def resolve_partition(name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """``dirichlet`` falls back, with a warning, when rows have no ``category`` (Alpaca-style data):
    to ``kmeans`` (TF-IDF clusters as categories, EcoLoRA Appendix A), or to ``iid`` when the rows
    have no instruction text to cluster either (``text`` rows). Other names are returned as given."""
    missing = sum(row.get("category") is None for row in rows)
    if name != "dirichlet" or not missing:
        return name
    clusterable = any(row.get("instruction") or row.get("input") for row in rows)
    fallback = "kmeans" if clusterable else "iid"
    logger.warning(
        "data.partition=dirichlet needs a `category` on every row; %d of %d rows have none: using "
        "%s instead (%s). Set data.partition to kmeans or iid to choose yourself.",
        missing, len(rows), fallback,
        "TF-IDF clusters as categories, EcoLoRA Appendix A" if clusterable else "no instruction text to cluster",
    )
    return fallback


def make_partitioner(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    num_partitions: int,
    *,
    seed: int,
    alpha: float = 0.5,
    num_clusters: int = 10,
    min_partition_size: int = 1,
) -> Partitioner:
    """Build a partitioner by name over ``rows`` (normalized instruction rows).

    * ``iid``: :class:`IidPartitioner`.
    * ``dirichlet``: :class:`DirichletPartitioner` over ``row["category"]`` with ``alpha``.
    * ``task``: :class:`TaskPartitioner` over ``row["category"]`` (one domain per client).
    * ``kmeans``: EcoLoRA Appendix A for data without categories: :func:`kmeans_labels`
      (``num_clusters`` TF-IDF K-means clusters) as synthetic categories, then ``dirichlet``.

    ``alpha`` is used by ``dirichlet`` and ``kmeans``, ``num_clusters`` by ``kmeans`` only.
    """
    if name not in PARTITIONERS:
        raise ValueError(f"Unknown partitioner {name!r}; known: {', '.join(PARTITIONERS)}.")
    sizes = {"seed": seed, "min_partition_size": min_partition_size}
    if name == "iid":
        return IidPartitioner(len(rows), num_partitions, **sizes)
    if name == "kmeans":
        labels = kmeans_labels(rows, num_clusters, seed=seed)
        return DirichletPartitioner(labels, num_partitions, alpha=alpha, **sizes)
    categories = [row.get("category") for row in rows]
    missing = sum(c is None for c in categories)
    if missing:
        raise ValueError(
            f"The `{name}` partitioner needs a `category` on every row; {missing} of {len(rows)} "
            "rows have none (Alpaca-style data): use `kmeans` (synthetic categories, EcoLoRA "
            "Appendix A) or `iid`."
        )
    if name == "task":
        return TaskPartitioner(categories, num_partitions, **sizes)
    return DirichletPartitioner(categories, num_partitions, alpha=alpha, **sizes)


def partition_stats(rows: Sequence[Mapping[str, Any]], partitioner: Partitioner) -> dict[str, Any]:
    """Per-client example and category counts, for a log table and a plot.

    A row's category is ``row["category"]``, else the partitioner's label (``kmeans``
    clusters), else ``"(none)"``.

    Returns:
        ``{"num_examples": int, "num_partitions": int, "categories": [sorted names],
        "clients": [{"partition_id": i, "num_examples": n, "category_counts": {name: count}}]}``;
        every client's ``category_counts`` lists all categories, zeros included.
    """
    if len(rows) != partitioner.num_examples:
        raise ValueError(
            f"`rows` has {len(rows)} entries but the partitioner split {partitioner.num_examples};"
            " pass the rows it was built on."
        )
    fallback = partitioner.labels
    names = [
        row.get("category") or (fallback[i] if fallback is not None else "(none)")
        for i, row in enumerate(rows)
    ]
    categories, codes = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    codes = codes.reshape(-1)
    clients = []
    for pid in range(partitioner.num_partitions):
        idx = np.asarray(partitioner.load_partition(pid), dtype=np.int64)
        counts = np.bincount(codes[idx], minlength=len(categories))
        clients.append(
            {
                "partition_id": pid,
                "num_examples": int(idx.size),
                "category_counts": dict(zip(categories.tolist(), counts.tolist(), strict=True)),
            }
        )
    return {
        "num_examples": len(rows),
        "num_partitions": partitioner.num_partitions,
        "categories": categories.tolist(),
        "clients": clients,
    }


def _dhondt(label_sizes: np.ndarray, num_clients: int) -> np.ndarray:
    """Clients per label: one each, then each extra client to the label with the largest
    ``size / clients`` among labels that still have more examples than clients."""
    counts = np.ones(len(label_sizes), dtype=np.int64)
    for _ in range(num_clients - len(label_sizes)):
        quotient = np.where(counts < label_sizes, label_sizes / counts, -np.inf)
        counts[int(np.argmax(quotient))] += 1
    return counts

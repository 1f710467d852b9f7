"""Synthetic categories for data without them: TF-IDF + K-means (EcoLoRA, Appendix A).

EcoLoRA (arXiv:2506.02001) partitions category-less instruction data (Alpaca-style) by
clustering it first and then applying the Dirichlet label skew to the cluster ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecolora.data.checks import check_int

logger = logging.getLogger("ecolora")

__all__ = ["kmeans_labels"]

_TEXT_FIELDS = ("instruction", "input", "prompt")  # SFT rows and DPO preference rows


def kmeans_labels(
    rows: Sequence[Mapping[str, Any]], num_clusters: int, *, seed: int, max_features: int = 1000
) -> list[str]:
    """Synthetic categories for data without them (EcoLoRA, arXiv:2506.02001, Appendix A).

    1. Text of a row: ``instruction + " " + input`` (preference rows: their ``prompt``).
    2. TF-IDF vectors with at most ``max_features`` terms, English stop words removed
       (scikit-learn ``TfidfVectorizer``).
    3. K-means (``KMeans(n_clusters=num_clusters, random_state=seed)``); the cluster id of a
       row is its category, named ``"cluster_00"``, ``"cluster_01"``, ...
    """
    check_int("num_clusters", num_clusters, minimum=1)
    check_int("seed", seed, minimum=0)
    if num_clusters > len(rows):
        raise ValueError(
            f"`num_clusters` ({num_clusters}) exceeds the number of rows ({len(rows)}); use "
            "fewer clusters."
        )
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [" ".join(str(row.get(key) or "") for key in _TEXT_FIELDS).strip() for row in rows]
    try:
        features = TfidfVectorizer(max_features=max_features, stop_words="english").fit_transform(
            texts
        )  # (num_rows, <= max_features) sparse
    except ValueError as exc:  # "empty vocabulary": only stop words or no text
        raise ValueError(
            f"TF-IDF found no usable words in the {len(rows)} rows ({exc}); the `kmeans` "
            "partitioner needs English text in `instruction`/`input`."
        ) from exc
    kmeans = KMeans(n_clusters=num_clusters, random_state=seed % 2**32, n_init="auto")
    cluster_ids = kmeans.fit_predict(features)  # (num_rows,)
    logger.info(
        "K-means synthetic categories: %d clusters, sizes %s",
        num_clusters,
        np.bincount(cluster_ids, minlength=num_clusters).tolist(),
    )
    return [f"cluster_{c:02d}" for c in cluster_ids]

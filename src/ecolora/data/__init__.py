"""Dataset sources, prompt formatting with response-only loss, held-out split, partitioners.

Typical use (see docs/data.md)::

    rows = load_instruction_rows("bigbench-ni", limit=5000, seed=0)
    train_rows, eval_rows = split_train_eval(rows, eval_size=0.05, seed=0)
    partitioner = make_partitioner("dirichlet", train_rows, num_partitions=10, seed=0)
    client_rows = [train_rows[i] for i in partitioner.load_partition(3)]
    batch = collate_sft([encode_sft(tok, r, 512) for r in client_rows[:8]], tok.pad_token_id)

Importing this package does not import ``datasets`` or scikit-learn; they load on first use.
"""

from ecolora.data.bigbench import load_task_json, natural_instructions_subtasks
from ecolora.data.kmeans import kmeans_labels
from ecolora.data.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    TaskPartitioner,
    make_partitioner,
    partition_stats,
    resolve_partition,
)
from ecolora.data.prompts import (
    IGNORE_INDEX,
    RESPONSE_MARKER,
    collate_sft,
    encode_sft,
    format_prompt,
)
from ecolora.data.sources import (
    BUILTIN_SOURCES,
    NI_CATEGORIES,
    load_instruction_rows,
    ni_category,
    normalize_rows,
    split_train_eval,
)

__all__ = [
    "BUILTIN_SOURCES",
    "IGNORE_INDEX",
    "NI_CATEGORIES",
    "PARTITIONERS",
    "RESPONSE_MARKER",
    "DirichletPartitioner",
    "IidPartitioner",
    "Partitioner",
    "TaskPartitioner",
    "collate_sft",
    "encode_sft",
    "format_prompt",
    "kmeans_labels",
    "load_instruction_rows",
    "load_task_json",
    "make_partitioner",
    "natural_instructions_subtasks",
    "ni_category",
    "normalize_rows",
    "partition_stats",
    "resolve_partition",
    "split_train_eval",
]

"""BIG-bench task files from the PyPI sdist ``bigbench==1.0.0`` (Apache-2.0), read offline.

The sdist is fetched once with ``pip download --no-deps`` (never installed: it pulls tensorflow),
and only the ``task.json`` members we need are extracted into ``<cache>/bigbench/``. Scanning the
358 MB archive takes about 7 s, so all requested tasks are extracted in one pass and kept.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ecolora.cache import get_cache_dir, pip_download

__all__ = ["BIGBENCH_REQUIREMENT", "load_task_json", "natural_instructions_subtasks"]

BIGBENCH_REQUIREMENT = "bigbench==1.0.0"
_TASKS_PREFIX = "bigbench/benchmark_tasks/"
_NI = "natural_instructions"


def _task_dir() -> Path:
    folder = get_cache_dir() / "bigbench" / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cached_path(task: str) -> Path:
    return _task_dir() / (task.replace("/", "__") + ".json")


def _extract(tasks: Iterable[str]) -> None:
    """Extract ``<task>/task.json`` for each missing task in one pass over the archive."""
    wanted = {t: _cached_path(t) for t in tasks if not _cached_path(t).exists()}
    if not wanted:
        return
    sdist = pip_download(BIGBENCH_REQUIREMENT, "bigbench-1.0.0", sdist=True)
    members = {f"{_TASKS_PREFIX}{t}/task.json": t for t in wanted}
    found: set[str] = set()
    with tarfile.open(sdist) as archive:
        for member in archive:
            _, _, inner = member.name.partition("/")  # strip "bigbench-1.0.0/"
            task = members.get(inner)
            if task is None or not member.isfile():
                continue
            data = archive.extractfile(member)
            if data is None:
                continue
            tmp = wanted[task].with_suffix(".tmp")
            tmp.write_bytes(data.read())
            os.replace(tmp, wanted[task])
            found.add(task)
            if len(found) == len(wanted):
                break
    missing = sorted(set(wanted) - found)
    if missing:
        raise ValueError(f"BIG-bench tasks not found in {sdist.name}: {', '.join(missing)}")


def load_task_json(task: str | Iterable[str]) -> Any:
    """Return the parsed ``task.json`` of one task (``"social_iqa"``,
    ``"natural_instructions/subtask024_cosmosqa_answer_generation"``, ``"hhh_alignment/helpful"``),
    or a ``{task: json}`` dict when given several names (extracted in a single pass)."""
    names = [task] if isinstance(task, str) else list(task)
    _extract(names)
    loaded = {name: json.loads(_cached_path(name).read_text(encoding="utf-8")) for name in names}
    return loaded[task] if isinstance(task, str) else loaded


def natural_instructions_subtasks() -> list[str]:
    """Names of the 61 Natural-Instructions subtasks (``subtaskNNN_<dataset>_<role>``)."""
    return [f"subtask{i:03d}_{name}" for i, name in enumerate(_NI_NAMES, start=1)]


# In archive order; checked against bigbench-1.0.0 (the sdist is pinned, so the list is fixed).
_NI_NAMES = """quoref_question_generation quoref_answer_generation
mctaco_question_generation_event_duration mctaco_answer_generation_event_duration
mctaco_wrong_answer_generation_event_duration mctaco_question_generation_transient_stationary
mctaco_answer_generation_transient_stationary mctaco_wrong_answer_generation_transient_stationary
mctaco_question_generation_event_ordering mctaco_answer_generation_event_ordering
mctaco_wrong_answer_generation_event_ordering mctaco_question_generation_absolute_timepoint
mctaco_answer_generation_absolute_timepoint mctaco_wrong_answer_generation_absolute_timepoint
mctaco_question_generation_frequency mctaco_answer_generation_frequency
mctaco_wrong_answer_generation_frequency mctaco_temporal_reasoning_presence
mctaco_temporal_reasoning_category mctaco_span_based_question mctaco_grammatical_logical
cosmosqa_passage_inappropriate_binary cosmosqa_question_generation cosmosqa_answer_generation
cosmosqa_incorrect_answer_generation drop_question_generation drop_answer_type_generation
drop_answer_generation winogrande_full_object winogrande_full_person
winogrande_question_generation_object winogrande_question_generation_person
winogrande_answer_generation winogrande_question_modification_object
winogrande_question_modification_person qasc_topic_word_to_generate_related_fact
qasc_generate_related_fact qasc_combined_fact qasc_find_overlapping_words qasc_question_generation
qasc_answer_generation qasc_incorrect_option_generation
essential_terms_answering_incomplete_questions essential_terms_identifying_essential_words
miscellaneous_sentence_paraphrasing miscellaenous_question_typing misc_answering_science_questions
multirc_question_generation multirc_questions_needed_to_answer multirc_answerability
multirc_correct_answer_single_sentence multirc_identify_bad_question multirc_correct_bad_question
multirc_write_correct_answer multirc_write_incorrect_answer multirc_classify_correct_answer
multirc_classify_incorrect_answer multirc_question_answering ropes_story_generation
ropes_question_generation ropes_answer_generation""".split()

assert len(_NI_NAMES) == 61  # noqa: S101 - a fixed table, not user input

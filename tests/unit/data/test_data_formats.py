"""data.format, data.columns, data.template and the dirichlet -> kmeans fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ecolora.client.model import builtin_model_dir
from ecolora.config import ConfigError, load_config
from ecolora.data import load_instruction_rows, normalize_rows, resolve_partition
from ecolora.data.prompts import IGNORE_INDEX, encode_sft
from ecolora.data.templates import encode_example, render_prompt, resolve_template


@pytest.fixture(scope="module")
def smollm2_tokenizer():  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(builtin_model_dir("smollm2-135m"))


def _jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


CHAT = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."}]


def test_messages_format(tmp_path: Path) -> None:
    rows = load_instruction_rows(_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}] * 3))
    assert rows[0]["output"] == "Paris." and rows[0]["messages"] == CHAT[:1]
    assert rows[0]["instruction"] == "What is the capital of France?"
    with pytest.raises(ValueError, match=r"last turn of `messages` in row 0 of mem must be the reply"):
        normalize_rows([{"messages": CHAT[:1] * 2}], "mem")


def test_text_format_and_forced_format(tmp_path: Path) -> None:
    rows = normalize_rows([{"text": "the whole text"}], "mem")
    assert rows[0]["output"] == "the whole text" and rows[0]["text"] is True
    with pytest.raises(ValueError, match=r"Missing field `messages` in row 0 of mem \(messages schema"):
        normalize_rows([{"instruction": "a", "output": "b"}], "mem", data_format="messages")


def test_column_mapping(tmp_path: Path) -> None:
    records = [{"question": "2+2?", "answer": "4", "topic": "math"}]
    rows = normalize_rows(records, "mem", columns={"instruction": "question", "output": "answer", "category": "topic"})
    assert rows == [{"instruction": "2+2?", "input": "", "output": "4", "category": "math", "task": None}]
    with pytest.raises(ValueError, match="`data.columns` maps unknown field"):
        normalize_rows(records, "mem", columns={"prompt": "question"})


def test_config_fields() -> None:
    config = load_config(None, ["data.format=messages", "data.template=chat", "data.columns={output: answer}"])
    assert (config.data.format, config.data.template, config.data.columns) == ("messages", "chat", {"output": "answer"})
    with pytest.raises(ConfigError, match="`data.template` must be one of auto, chat, alpaca, plain"):
        load_config(None, ["data.template=llama"])
    with pytest.raises(ConfigError, match="`data.columns` must be a mapping"):
        load_config(None, ["data.columns=[a]"])


def test_auto_template(smollm2_tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert resolve_template("auto", smollm2_tokenizer, "bigbench-ni") == "alpaca"  # reference results
    assert resolve_template("auto", smollm2_tokenizer, "my.jsonl") == "chat"
    smollm2_tokenizer.chat_template, saved = None, smollm2_tokenizer.chat_template
    try:
        assert resolve_template("auto", smollm2_tokenizer, "my.jsonl") == "alpaca"
        with pytest.raises(ValueError, match="tokenizer has no chat template"):
            resolve_template("chat", smollm2_tokenizer, "my.jsonl")
    finally:
        smollm2_tokenizer.chat_template = saved


def test_chat_template_masks_exactly_the_prompt(smollm2_tokenizer) -> None:  # type: ignore[no-untyped-def]
    tok = smollm2_tokenizer
    row = normalize_rows([{"messages": CHAT}], "mem")[0]
    encoded = encode_example(tok, row, 256, "chat")
    prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    num_prompt = sum(label == IGNORE_INDEX for label in encoded["labels"])
    assert tok.decode(encoded["input_ids"][:num_prompt]) == prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert all(label == IGNORE_INDEX for label in encoded["labels"][:num_prompt])
    assert tok.decode(encoded["labels"][num_prompt:]) == "Paris.<|im_end|>"
    full = tok.apply_chat_template(CHAT, tokenize=False)
    assert full.startswith(tok.decode(encoded["input_ids"]))  # the model's own format


def test_chat_truncation_keeps_reply_header(smollm2_tokenizer) -> None:  # type: ignore[no-untyped-def]
    row = {"instruction": "word " * 300, "input": "", "output": "short answer"}
    encoded = encode_example(smollm2_tokenizer, row, 64, "chat")
    assert len(encoded["input_ids"]) <= 64
    num_prompt = sum(label == IGNORE_INDEX for label in encoded["labels"])
    assert smollm2_tokenizer.decode(encoded["input_ids"][:num_prompt]).endswith("<|im_start|>assistant\n")
    assert smollm2_tokenizer.decode(encoded["labels"][num_prompt:]) == "short answer<|im_end|>"


def test_alpaca_and_plain_and_text(smollm2_tokenizer) -> None:  # type: ignore[no-untyped-def]
    row = {"instruction": "Name a colour.", "input": "", "output": "blue"}
    assert encode_example(smollm2_tokenizer, row, 96, "alpaca") == encode_sft(smollm2_tokenizer, row, 96)
    assert render_prompt("plain", smollm2_tokenizer, row) == "Name a colour.\n\n"
    text_row = normalize_rows([{"text": "all of it"}], "mem")[0]
    encoded = encode_example(smollm2_tokenizer, text_row, 96, "alpaca")
    assert IGNORE_INDEX not in encoded["labels"]


def test_dirichlet_falls_back_loudly(caplog: pytest.LogCaptureFixture) -> None:
    rows = [{"instruction": f"task {i}", "input": "", "output": "x", "category": None} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="ecolora"):
        assert resolve_partition("dirichlet", rows) == "kmeans"
    assert "needs a `category` on every row; 4 of 4 rows have none: using kmeans" in caplog.text
    assert resolve_partition("dirichlet", [{**r, "category": "a"} for r in rows]) == "dirichlet"
    assert resolve_partition("dirichlet", [{"instruction": "", "output": "t", "category": None}]) == "iid"


def test_alpaca_file_sets_up_under_the_default_partitioner(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ecolora.sim.setup import build_setup

    rows = [{"instruction": f"Say {w} {i}.", "input": "", "output": w} for i, w in enumerate(["red", "blue", "green", "sky"] * 10)]
    smoke = Path(__file__).resolve().parents[3] / "configs" / "smoke.yaml"
    config = load_config(smoke, [f"data.source={_jsonl(tmp_path / 'alpaca.jsonl', rows)}", "data.eval_size=4",
                                 "data.num_clusters=2"])
    assert config.data.partition == "dirichlet"
    with caplog.at_level(logging.INFO, logger="ecolora"):
        setup = build_setup(config)
    assert "using kmeans instead" in caplog.text and "Prompt template: chat" in caplog.text
    assert setup.num_train_examples == 36

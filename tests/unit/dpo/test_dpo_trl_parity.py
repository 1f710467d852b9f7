"""Our DPO loss equals TRL's DPOTrainer (loss_type="sigmoid") on the same batch.

Skipped when TRL is absent. TRL builds the batch (its tokenization and collation); the same
tensors are fed to ``dpo_batch_loss`` with the same LoRA weights, so the check covers the log-probs,
the adapter-disabled reference and the loss.
"""

from __future__ import annotations

import pytest
import torch
from tiny_lm import make_model, make_tokenizer

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from peft import LoraConfig  # noqa: E402

from ecolora.client.dpo import dpo_batch_loss  # noqa: E402

ROWS = [
    {"prompt": "what is the capital of france ?", "chosen": "paris .", "rejected": "rome ."},
    {"prompt": "the sky is", "chosen": "blue", "rejected": "green and red and green"},
    {"prompt": "is the grass green ?", "chosen": "yes", "rejected": "no"},
]


def test_dpo_batch_loss_matches_trl_dpo_trainer(tmp_path) -> None:
    tokenizer, model = make_tokenizer(), make_model()
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        report_to=[],
        per_device_train_batch_size=3,
        beta=0.1,
        use_cpu=True,
        max_length=64,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = trl.DPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]
        ),
    )
    peft_model = trainer.model
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    inputs = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(peft_model, inputs)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    n = inputs["input_ids"].shape[0] // 2  # TRL stacks [chosen; rejected]
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    batch = {}
    for side, rows in (("chosen", slice(0, n)), ("rejected", slice(n, 2 * n))):
        batch[f"{side}_input_ids"] = inputs["input_ids"][rows]
        batch[f"{side}_attention_mask"] = inputs["attention_mask"][rows]
        batch[f"{side}_labels"] = labels[rows]
    loss, metrics = dpo_batch_loss(peft_model, batch, beta=0.1)

    assert abs(trl_loss.item() - 0.6931) > 1e-3  # the adapter moved the policy off the reference
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert metrics["reward_margin"] == pytest.approx(trl_metrics["rewards/margins"], abs=1e-5)
    assert metrics["reward_accuracy"] == pytest.approx(trl_metrics["rewards/accuracies"])
    assert metrics["chosen_reward"] == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-5)
    assert metrics["rejected_reward"] == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-5)

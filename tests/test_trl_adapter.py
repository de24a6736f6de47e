"""Every reward method must work as a TRL reward function: two real GRPO steps on the tiny model."""

import pytest
import torch

from harness import catalog
from harness.methods import as_reward_func, create_method


@pytest.mark.parametrize("method_name", ["length", "random"])
def test_two_grpo_steps_update_the_policy(tmp_path, method_name):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    path = catalog.resolve("tiny-random")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prompts = [[{"role": "user", "content": f"Say something about {w}."}] for w in ("rain", "salt", "maps", "owls")]
    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,  # use_cpu alone turns bf16 on, which is ~5x slower on this CPU
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[as_reward_func(create_method(method_name))],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = [row for row in trainer.state.log_history if f"rewards/{method_name}/mean" in row]
    assert len(logged) == 2
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "GRPO did not update any parameter"

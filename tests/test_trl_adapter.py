"""Every reward method must work as a TRL reward function: two real GRPO steps on the tiny model.

The prompts are real HealthBench conversations, so the expert rubrics apply; the rubric methods judge with
tiny-random, and `external_rubrics` gets its rubrics from `ScriptedWriter` behind a real HTTP server.
"""

import pytest
import torch
from test_baselines import ScriptedWriter, healthbench_records, serve_in_thread

from harness import catalog
from harness.methods import FitContext, as_reward_func, create_method
from harness.serve import ChatService


def build_method(name, tmp_path, request):
    """The method under test, ready to score (trained or served as it needs)."""
    if name == "bt_rm":
        method = create_method("bt_rm", base="tiny-random", preset="test")
        method.fit(FitContext(workdir=tmp_path, seed=0))
        return method
    if name == "expert_rubrics":
        return create_method("expert_rubrics", judge=request.getfixturevalue("tiny_backend"), cache=False)
    if name == "external_rubrics":
        server, url = serve_in_thread(ChatService(ScriptedWriter(), "scripted"))
        request.addfinalizer(server.server_close)
        request.addfinalizer(server.shutdown)
        judge = request.getfixturevalue("tiny_backend")
        return create_method("external_rubrics", base_url=f"{url}/v1", model="scripted", judge=judge, cache=False)
    return create_method(name)


@pytest.mark.parametrize("method_name", ["length", "random", "bt_rm", "expert_rubrics", "external_rubrics"])
def test_two_grpo_steps_update_the_policy(tmp_path, request, method_name):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    method = build_method(method_name, tmp_path, request)
    path = catalog.resolve("tiny-random")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prompts = [list(r.chat) for r in healthbench_records(4)]
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
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
        reward_funcs=[as_reward_func(method)],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = [row for row in trainer.state.log_history if f"rewards/{method_name}/mean" in row]
    assert len(logged) == 2
    assert all(row[f"rewards/{method_name}/mean"] == row[f"rewards/{method_name}/mean"] for row in logged)  # no NaN
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "GRPO did not update any parameter"

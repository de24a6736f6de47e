"""Over-optimisation monitor: the proxy reward and a gold metric, side by side, at every GRPO step.

The proxy is what the policy is optimised for: the reward method's mean reward on the step's completions (TRL logs
it as `rewards/<method>/mean`). The gold metric is verifiable correctness on a held-out probe set of math problems
(train split, never trained on, never evaluated by lm-eval), measured with greedy decoding every `every` steps and
before the first step. A proxy that keeps rising while the gold metric falls is over-optimisation (Gao et al. 2023).

Each step is one record in `steps.jsonl` of the training run (a `harness.store.ResultLog`, key `step-000012`), so a
resumed run keeps the steps it has and appends the rest. A co-evolution trainer, which runs one TRL trainer per
phase, sets `offset` (policy steps before the phase) and `total_steps` (its whole policy budget), so the steps of
its policy phases make one series.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from harness.store import ResultLog
from harness.types import user_chat

STEP_LOG = "steps.jsonl"


def step_key(step: int) -> str:
    """Result-log key of a training step.

    >>> step_key(12)
    'step-000012'
    """
    return f"step-{step:06d}"


def greedy_replies(
    model: Any, tokenizer: Any, questions: Sequence[str], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy chat replies from a (possibly training) model, restoring its train/eval mode afterwards."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    replies: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(questions), batch_size):
                texts = [
                    tokenizer.apply_chat_template(user_chat(q), tokenize=False, add_generation_prompt=True)
                    for q in questions[start : start + batch_size]
                ]
                enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
                replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies


class OveroptimisationMonitor(TrainerCallback):
    """A TrainerCallback that writes one record per step: proxy reward, gold probe accuracy, and TRL's step metrics.

    Args:
        run_dir: the training run's directory; records go to `run_dir/steps.jsonl`.
        reward_name: the reward function's name in TRL's logs (the method's `name`).
        probe: math problems with `question` and `answer`, scored with `tasks.math_verified.is_correct`.
        every: measure the gold metric every this many steps (and at step 0 and the last step).
        max_new_tokens: greedy reply length for the probe.
        total_steps: the last step, when it is not the trainer's `max_steps` (a co-evolution run's policy budget).
    """

    def __init__(
        self,
        run_dir: Path,
        reward_name: str,
        probe: Sequence[Any],
        every: int,
        max_new_tokens: int,
        total_steps: int | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"monitor: probe interval 'every' must be >= 1, got {every}")
        self.log = ResultLog(Path(run_dir) / STEP_LOG)
        self.reward_name, self.probe, self.every, self.max_new_tokens = reward_name, list(probe), every, max_new_tokens
        self.total_steps = total_steps
        self.offset = 0  # steps before the current trainer's first (set per phase by co-evolution trainers)
        self._gold: dict[str, Any] | None = None
        self._start = time.time()

    def start_clock(self, seconds_before: float = 0.0) -> None:
        """Count `wall_s` from now, plus `seconds_before` (the time an interrupted run spent before its resume)."""
        self._start = time.time() - seconds_before

    def wall_at(self, step: int) -> float:
        """The `wall_s` logged for `step` (0.0 when that step has no record): where a resumed run's clock goes on."""
        return next((r["wall_s"] for r in self.log.records() if r["key"] == step_key(step)), 0.0)

    def gold(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        """Probe accuracy of the current policy, with each problem's verdict for paired comparisons."""
        from tasks.math_verified import is_correct

        replies = greedy_replies(model, tokenizer, [p.question for p in self.probe], self.max_new_tokens)
        correct = [is_correct(r, p.answer) for r, p in zip(replies, self.probe, strict=True)]
        return {
            "gold_accuracy": sum(correct) / len(correct) if correct else None,
            "gold_correct": {p.id: c for p, c in zip(self.probe, correct, strict=True)},
        }

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Measure the untrained policy once (not again on resume)."""
        if self.offset + state.global_step == 0 and step_key(0) not in self.log and self.probe:
            gold = self.gold(model, kwargs["processing_class"])
            self.log.append({"key": step_key(0), "step": 0, "proxy_reward": None, **gold, "wall_s": 0.0})

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Measure the gold metric on probe steps; the record is written when TRL logs this step's rewards."""
        step, last = self.offset + state.global_step, self.total_steps or state.max_steps
        if self.probe and (step % self.every == 0 or step == last) and step_key(step) not in self.log:
            self._gold = self.gold(model, kwargs["processing_class"])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Write the step's record: proxy reward next to the gold metric (None on steps without a probe)."""
        logs = logs or {}
        name = f"rewards/{self.reward_name}/mean"
        step = self.offset + state.global_step
        if name not in logs or step_key(step) in self.log:
            return  # the end-of-training summary, or a step already recorded before a resume
        proxy = logs[name]  # None or NaN when the method scored nothing in this step: still a step to record
        proxy = None if proxy is None or math.isnan(proxy) else float(proxy)
        gold, self._gold = self._gold or {"gold_accuracy": None, "gold_correct": None}, None
        record = {
            "key": step_key(step),
            "step": step,
            "proxy_reward": proxy,
            **gold,
            "wall_s": time.time() - self._start,
            "trl": {k: v for k, v in logs.items() if isinstance(v, int | float)},
        }
        self.log.append(record)


def logged_seconds(run_dir: Path) -> float:
    """The monitor's clock at the last logged step, 0.0 before any: what earlier attempts of a resumed run took."""
    return max((r.get("wall_s", 0.0) for r in ResultLog(Path(run_dir) / STEP_LOG).records()), default=0.0)


def curve(run_dir: Path) -> list[dict[str, Any]]:
    """The proxy-vs-gold series of a training run: `step`, `proxy_reward`, `gold_accuracy` per logged step."""
    records = ResultLog(Path(run_dir) / STEP_LOG).records()
    rows = [{k: r.get(k) for k in ("step", "proxy_reward", "gold_accuracy")} for r in records]
    return sorted(rows, key=lambda r: r["step"])

"""`bt_rm`: a scalar Bradley-Terry reward model, SmolLM2 backbone plus a scalar head, trained with TRL.

Training data: `FitContext.train_items` when the caller gives them; otherwise the *train fold* of HealthBench
(physician ideal completion preferred over each model reference completion; folds from `harness.splits.fold`
on the prompt id), so the default model never sees the eval-fold items that benchmarks report on.

Each (prompt, response) is rendered with the chat template and cut to the preset's `max_length` tokens, the
same way in training and scoring (TRL's RewardTrainer would otherwise *drop* longer pairs).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.cache import content_key
from harness.methods import FitContext, reward_method
from harness.types import Chat, PreferenceItem


@dataclass(frozen=True)
class BTPreset:
    """Training budget; `trainable_layers=None` fine-tunes the whole backbone."""

    max_length: int
    max_pairs: int | None
    epochs: float
    learning_rate: float
    batch_size: int
    trainable_layers: int | None


PRESETS = {
    # Minutes on 2 CPU cores: short sequences, a few dozen pairs, only the top layers and the head train.
    "cpu": BTPreset(max_length=256, max_pairs=64, epochs=1, learning_rate=5e-5, batch_size=8, trainable_layers=4),
    # A GPU run over every training pair, full fine-tune.
    "gpu": BTPreset(
        max_length=2048, max_pairs=None, epochs=2, learning_rate=1e-5, batch_size=16, trainable_layers=None
    ),
    # Tests on tiny-random.
    "test": BTPreset(max_length=64, max_pairs=8, epochs=1, learning_rate=1e-3, batch_size=4, trainable_layers=None),
}


def preference_pairs(items: Sequence[PreferenceItem]) -> list[tuple[Chat, str, str]]:
    """Every (prompt, chosen, rejected) combination of the items."""
    return [(list(it.prompt), c, r) for it in items for c in it.chosen for r in it.rejected]


def default_train_items() -> list[PreferenceItem]:
    """HealthBench ideal-vs-reference items whose prompt falls in the train fold."""
    from harness.data import healthbench_ideal_items
    from harness.splits import TRAIN, fold

    return [it for it in healthbench_ideal_items() if fold(it.id) == TRAIN]


class BTRewardModel:
    """A sequence-classification head on a causal LM backbone, trained on preference pairs."""

    name = "bt_rm"

    def __init__(self, base: str = "smollm2-135m", preset: str = "cpu", checkpoint: str | None = None) -> None:
        if preset not in PRESETS:
            raise ValueError(f"bt_rm: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        self.base, self.preset, self.checkpoint = base, PRESETS[preset], checkpoint
        self._model: Any = None
        self._tokenizer: Any = None

    def encode(self, tokenizer: Any, prompt: Chat, response: str) -> list[int]:
        """Token ids of the rendered conversation, cut to the preset's max_length."""
        chat = [*prompt, {"role": "assistant", "content": response}]
        ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
        return list(ids)[: self.preset.max_length]

    def fit(self, ctx: FitContext) -> None:
        """Train on the context's items (or the default split) unless an identical model is already stored."""
        pairs = preference_pairs(ctx.train_items or default_train_items())
        random.Random(ctx.seed).shuffle(pairs)
        pairs = pairs[: self.preset.max_pairs]
        if not pairs:
            raise ValueError("bt_rm: no training pairs (train_items is empty)")
        key = content_key("bt_rm", base=self.base, preset=asdict(self.preset), pairs=pairs, seed=ctx.seed)
        target = Path(ctx.workdir) / "bt_rm" / key[:16]
        if not (target / "config.json").is_file():
            self._train(pairs, target, ctx.seed)
        self.checkpoint, self._model = str(target), None

    def _train(self, pairs: list[tuple[Chat, str, str]], target: Path, seed: int) -> None:
        import torch
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        from harness import catalog

        path = catalog.resolve(self.base)
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        self._freeze_lower_layers(model)
        rows = [
            {"chosen_ids": self.encode(tokenizer, p, c), "rejected_ids": self.encode(tokenizer, p, r)}
            for p, c, r in pairs
        ]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".bt_rm-", dir=target.parent))
        args = RewardConfig(
            output_dir=str(tmp / "trainer"),
            per_device_train_batch_size=self.preset.batch_size,
            num_train_epochs=self.preset.epochs,
            learning_rate=self.preset.learning_rate,
            max_length=None,  # we cut sequences ourselves; RewardTrainer would drop long pairs
            bf16=False,  # no native bf16 on these CPUs; fp32 is ~5x faster
            activation_checkpointing=False,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            seed=seed,
            disable_tqdm=False,
            dataloader_pin_memory=False,
        )
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        trainer.train()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "bt_rm.json").write_text(json.dumps({"log": trainer.state.log_history, "pairs": len(rows)}))
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        tmp.rename(target)  # atomic: a killed training run leaves no half-saved model under the final name

    def _freeze_lower_layers(self, model: Any) -> None:
        if self.preset.trainable_layers is None:
            return
        layers = model.model.layers
        for param in model.model.parameters():
            param.requires_grad = False
        for layer in layers[-self.preset.trainable_layers :]:
            for param in layer.parameters():
                param.requires_grad = True
        for param in model.model.norm.parameters():
            param.requires_grad = True

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self.checkpoint is None:
            raise RuntimeError("bt_rm has no trained model: call fit() first or pass checkpoint=PATH")
        self._tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        self._model = AutoModelForSequenceClassification.from_pretrained(self.checkpoint, dtype=torch.float32).eval()

    def score(self, prompts: Sequence[Chat], responses: Sequence[str], batch_size: int = 8) -> list[float]:
        """The reward head's scalar for each (prompt, response)."""
        import torch

        if self._model is None:
            self._load()
        ids = [self.encode(self._tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
        pad = self._tokenizer.pad_token_id
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start : start + batch_size]
                width = max(len(x) for x in chunk)
                batch = torch.tensor([x + [pad] * (width - len(x)) for x in chunk])
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk])
                scores += self._model(input_ids=batch, attention_mask=mask).logits[:, 0].tolist()
        return scores


@reward_method("bt_rm", kind="scalar")
def bt_rm(base: str = "smollm2-135m", preset: str = "cpu", checkpoint: str | None = None) -> BTRewardModel:
    """Scalar Bradley-Terry reward model (SmolLM2 + scalar head, TRL RewardTrainer)."""
    return BTRewardModel(base=base, preset=preset, checkpoint=checkpoint)

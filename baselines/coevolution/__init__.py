"""Shared machinery of the co-evolution trainers (EvoLM, EvoRubric): one model trained in alternating GRPO phases.

- `schedule`: which role trains when; `grpo`: one TRL GRPO phase over a persistent model and optimizer.
- `roles`: the chats of the policy and rubric-generator roles, and a backend over a model that is training.
- `session`: models, optimizers, frozen judge, step counters and telemetry of one run.
- `history`: every policy response with its step, and age-window sampling (temporal contrast).
- `judging`: the frozen judge and its weight digest; `telemetry`: step records in the run store.
- `data`: prompt and held-out pair sources; `audit`: the temporal-contrast label-noise audit.
"""

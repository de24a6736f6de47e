"""reward-harness: compare reward methods on static preference benchmarks and by the policies they train.

Importing the package is cheap: torch, transformers and TRL are imported only by the modules that need them.
"""

from harness.methods import (
    FitContext,
    MethodInfo,
    PolicyContext,
    PolicyTrainingMethod,
    RewardMethod,
    RubricMethod,
    as_reward_func,
    available_methods,
    create_method,
    reward_method,
)
from harness.types import (
    Chat,
    Criterion,
    GenerationParams,
    Message,
    PreferenceItem,
    Rubric,
    Verdict,
    user_chat,
)

__all__ = [
    "Chat",
    "Criterion",
    "FitContext",
    "GenerationParams",
    "Message",
    "MethodInfo",
    "PolicyContext",
    "PolicyTrainingMethod",
    "PreferenceItem",
    "RewardMethod",
    "Rubric",
    "RubricMethod",
    "Verdict",
    "as_reward_func",
    "available_methods",
    "create_method",
    "reward_method",
    "user_chat",
]

"""Flat keyword overrides on a method config whose shared part is a nested `SessionConfig`."""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any, TypeVar

from baselines.coevolution.grpo import GRPOSettings

T = TypeVar("T")
_ROLE_SETTINGS = ("policy", "generator")


def apply_overrides(config: T, overrides: dict[str, Any]) -> T:
    """Return `config` with `overrides` applied to its own fields or to those of its `session` field.

    `policy` and `generator` take a `GRPOSettings` or a dict of its fields (merged into the preset's). Unknown
    names raise a `ValueError` listing the valid ones, so a typo never silently falls back to a default.
    """
    own = {f.name for f in fields(config)} - {"session"}  # type: ignore[arg-type]
    session = config.session  # type: ignore[attr-defined]
    shared = {f.name for f in fields(session)}
    unknown = sorted(set(overrides) - own - shared)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {sorted(own | shared)}")
    session_changes = {k: _coerce(k, v, getattr(session, k)) for k, v in overrides.items() if k in shared}
    own_changes = {k: _coerce(k, v, getattr(config, k)) for k, v in overrides.items() if k in own}
    return replace(config, session=replace(session, **session_changes), **own_changes)  # type: ignore[type-var]


def preset_config(method: str, presets: dict[str, T], preset: str, overrides: dict[str, Any]) -> T:
    """`presets[preset]` with `overrides` applied; an unknown preset name raises a `ValueError` naming the choices."""
    if preset not in presets:
        raise ValueError(f"{method}: unknown preset {preset!r}; choose one of {sorted(presets)}")
    return apply_overrides(presets[preset], overrides)


def _coerce(name: str, value: Any, current: Any) -> Any:
    if name in _ROLE_SETTINGS and isinstance(value, dict):
        return replace(current, **value)
    if name in _ROLE_SETTINGS and not isinstance(value, GRPOSettings):
        raise ValueError(f"option {name!r} takes GRPOSettings or a dict of its fields, got {type(value).__name__}")
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)  # JSON and CLI give lists for tuple fields such as age_window
    if is_dataclass(current) and isinstance(value, dict):
        return replace(current, **value)
    return value

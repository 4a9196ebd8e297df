"""Environments with large discrete action sets, their true models and registration."""

from merlion_core.envs.registry import (
    ENV_SPECS,
    UnknownEnvError,
    get_spec,
    make_config,
    make_env,
    make_model,
    register_envs,
    resolve_env_id,
)

register_envs()

__all__ = [
    "ENV_SPECS",
    "UnknownEnvError",
    "get_spec",
    "make_config",
    "make_env",
    "make_model",
    "register_envs",
    "resolve_env_id",
]

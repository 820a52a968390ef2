"""Typed configuration: the schema every composed run config is checked against."""

from alrp_lab.config.schema import ConfigError, RunConfig, validate_config

__all__ = ["ConfigError", "RunConfig", "validate_config"]

"""Shared fixtures: the stack fixtures are usable from every test directory."""

from tests.integration.conftest import lakehook_server, stack_settings

__all__ = ["lakehook_server", "stack_settings"]

"""Test helpers for plugin authors: fixtures (``facerep.testing.plugin``, auto-loaded by pytest)
and contract suites every component should pass."""

from facerep.testing.contracts import ObjectiveContract, build_objective, tiny_params, view_batch

__all__ = ["ObjectiveContract", "build_objective", "tiny_params", "view_batch"]

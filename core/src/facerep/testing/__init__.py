"""Test helpers for plugin authors: fixtures (``facerep.testing.plugin``, auto-loaded by pytest)
and contract suites every component should pass."""

from facerep.testing.contracts import (
    ObjectiveContract,
    backbone_component,
    build_objective,
    call_objective,
    objective_batch,
    tiny_backbone,
    tiny_params,
    train_steps,
    view_batch,
)
from facerep.testing.task_contract import PairedFaces, TaskContract, build_task

__all__ = ["ObjectiveContract", "PairedFaces", "TaskContract", "backbone_component", "build_objective", "build_task", "call_objective",
           "objective_batch", "tiny_backbone", "tiny_params", "train_steps", "view_batch"]

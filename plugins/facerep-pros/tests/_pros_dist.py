"""Work of each process of the 2-process gloo test (imported by name in the spawned processes)."""

from __future__ import annotations

import torch

from facerep.prototypes import Centre, prototype_distillation_loss, teacher_distribution

VIEWS, GLOBAL, K = 4, 2, 6


def global_batch(n: int = 8) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Student logits per view ``(n, K)`` and the teacher's logits of the 2 globals ``(2n, K)``."""
    g = torch.Generator().manual_seed(11)
    return [torch.randn(n, K, generator=g) for _ in range(VIEWS)], torch.randn(GLOBAL * n, K, generator=g)


def step(student: list[torch.Tensor], teacher: torch.Tensor, centre: Centre) -> torch.Tensor:
    """Two steps of one process: the loss of the second uses the centre moved by the first."""
    b = student[0].shape[0]
    for _ in range(2):
        loss = prototype_distillation_loss(student, teacher_distribution(teacher, centre.centre, 0.04).split(b), 0.1)
        centre.stage(teacher)
        centre.commit()
    return loss


def half(rank: int, world: int) -> dict:
    student, teacher = global_batch()
    b = student[0].shape[0] // world
    mine = [s[rank * b : (rank + 1) * b] for s in student]
    # the teacher rows of this process: its slice of each global view
    t = torch.cat([teacher.view(GLOBAL, -1, K)[v, rank * b : (rank + 1) * b] for v in range(GLOBAL)])
    centre = Centre(K, 0.9)
    loss = step(mine, t, centre)
    return {"loss": loss, "centre": centre.centre}

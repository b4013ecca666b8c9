"""facerep-example-objective: a third-party facerep plugin adding the VICReg objective.

Importing this package imports nothing heavy; the objective lives in
:mod:`facerep_example_objective.objective` and is imported only when a run builds it.
"""

__version__ = "0.1.0"

"""Co-optimization of an accelerator configuration and keep ratios for a device and a latency target.

* :mod:`~tokensift.coopt.space` -- the design space (hardware axes x keep ratios);
* :mod:`~tokensift.coopt.evaluate` -- exact, vectorised costs of design points (the validated cost model);
* :mod:`~tokensift.coopt.pareto` -- non-dominated fronts;
* :mod:`~tokensift.coopt.search` -- grid and NSGA-II (optuna) searches, the chosen point, the training budget;
* :mod:`~tokensift.coopt.latency_train` -- computation-aware training with the latency budget;
* :mod:`~tokensift.coopt.report` -- Markdown + PNG report;
* :mod:`~tokensift.coopt.demo` -- the end-to-end demo.
"""

from tokensift.coopt.evaluate import CostEvaluator
from tokensift.coopt.space import (
           HwChoice,
           HwSpace,
           KeepSpace,
           default_hw_space,
           default_keep_space,
           keep_kind,
)

__all__ = ["CostEvaluator", "HwChoice", "HwSpace", "KeepSpace", "default_hw_space", "default_keep_space",
           "keep_kind"]

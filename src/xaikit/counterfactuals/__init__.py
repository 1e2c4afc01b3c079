"""Counterfactual explanations: "what would have to change".

- :class:`Counterfactuals`: the closest change giving a wanted class (Wachter, Mittelstadt, Russell 2017) or a
  diverse set of ``k`` (Mothilal, Sharma, Tan, FAT* 2020), within immutable features, ranges, directions and
  categories (:mod:`xaikit.counterfactuals.constraints`), near the data (k-NN or an autoencoder, the plausibility
  term shared with CEM in :mod:`xaikit.metrics.counterfactual`); gradient descent on a torch model, a batched
  genetic search on any callable (:mod:`xaikit.counterfactuals.search`).

Their quality measures (validity, proximity, sparsity, diversity, plausibility) are metrics in ``xk.metrics``.
"""
from .constraints import Constraints
from .generator import Counterfactuals, CounterfactualsResult

__all__ = ["Counterfactuals", "CounterfactualsResult", "Constraints"]

"""Counterfactual explanations: "what would have to change".

- :class:`Counterfactuals`: the closest change giving a wanted class (Wachter, Mittelstadt, Russell 2017) or a
  diverse set of ``k`` (Mothilal, Sharma, Tan, FAT* 2020), within immutable features, ranges, directions and
  categories (:mod:`xaikit.counterfactuals.constraints`), near the data (k-NN or an autoencoder, the plausibility
  term shared with CEM in :mod:`xaikit.metrics.counterfactual`); gradient descent on a torch model, a batched
  genetic search on any callable (:mod:`xaikit.counterfactuals.search`).

- :class:`TokenCounterfactuals`: token substitutions from the model's own vocabulary chosen by HotFlip's
  first-order scores (Ebrahimi et al., ACL 2018) and checked exactly, in batches (:mod:`xaikit.counterfactuals.tokens`).

Their quality measures (validity, proximity, sparsity, diversity, plausibility) are metrics in ``xk.metrics``.
"""
from .constraints import Constraints
from .generator import Counterfactuals, CounterfactualsResult
from .tokens import TokenCounterfactuals, TokenCounterfactualsResult

__all__ = ["Counterfactuals", "CounterfactualsResult", "Constraints", "TokenCounterfactuals",
           "TokenCounterfactualsResult"]

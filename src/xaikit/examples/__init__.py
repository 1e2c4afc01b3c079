"""Explanation by example: nearest neighbours with similarity heatmaps, influence of training samples
(TracIn), prototypes with an outlier score, and contrastive explanations (CEM pertinent positives/negatives).

- :class:`FeatureIndex`: the exact k nearest samples of a data set in a layer's feature space, and BiLRP
  heatmaps of why each neighbour is similar;
- :class:`TracIn`: the training samples that most supported or opposed a prediction (Pruthi et al. 2020);
- :class:`TRAK` (Park et al. 2023) and :class:`InfluenceFunctions` (Koh & Liang 2017, LiSSA or exact iHVP):
  training-data attribution under TracIn's interface (``fit`` on the training set, ``scores``/``top``/
  ``self_scores`` for queries); checked by retraining with :mod:`xaikit.metrics.data_attribution`;
  :func:`shown_trak`: the settings the report and ``xaikit serve`` show a prediction's proponents with;
- :class:`Prototypes`: per-class prototypes of features or concept relevances, their closest real samples
  and a distance-based outlier score (Dreyer et al. 2023); :func:`channel_relevance` gives the vectors;
- :class:`CEM`: pertinent positives and negatives (Dhurandhar et al. 2018).

Built on the engine (LRP, BiLRP) and importing downward only.
"""
from ..deprecation import renamed
from ..deprecation import renamed as _renamed
from .cem import CEM, CEMResult
from .index import FeatureIndex, NeighboursResult, SimilarityMapsResult
from .influence import TracIn, TracInResult
from .influence_functions import InfluenceFunctions, InfluenceFunctionsResult
from .layers import LayerFeatures
from .prototypes import Prototypes, PrototypesResult, kmedoids
from .relevance import channel_relevance
from .shown import SHOWN_SETTINGS, shown_method, shown_trak
from .trak import TRAK, TRAKResult

__all__ = ["FeatureIndex", "NeighboursResult", "SimilarityMapsResult", "LayerFeatures", "TracIn", "TracInResult",
           "Prototypes", "PrototypesResult", "kmedoids", "channel_relevance", "CEM", "CEMResult",
           "TRAK", "TRAKResult", "InfluenceFunctions", "InfluenceFunctionsResult",
           "SHOWN_SETTINGS", "shown_trak", "shown_method"]

#: old result names (kept for one release, with a DeprecationWarning)
__getattr__ = _renamed(__name__, {"Neighbours": "NeighboursResult", "SimilarityMaps": "SimilarityMapsResult",
                                  "Influence": "TracInResult", "PrototypeSet": "PrototypesResult"}, globals())

"""Attribution methods, one module per family; each built-in method is registered under its snake_case name
(``@register`` at its class, see :func:`xaikit.methods.base.register`)."""
from .bilrp import BiLRP
from .cam import GradCAM, GradCAMPlusPlus
from .deeplift import DeepLift, DeepLiftShap, GradientShap
from .gradient import Gradient, InputXGradient
from .layer import LayerConductance, LayerGradientXActivation, NeuronAttribution
from .occlusion import Occlusion
from .path import IntegratedGradients
from .perturbation import RISE, MeaningfulPerturbation
from .propagation import LRP, DeconvNet, ExcitationBackprop, GuidedBackprop
from .shapley import ExactShapley, KernelSHAP, PermutationShapley
from .smoothing import SmoothGrad, SmoothGradSquared, VarGrad
from .surrogate import LIME

__all__ = [
    "Gradient", "InputXGradient", "LRP", "GuidedBackprop", "DeconvNet", "ExcitationBackprop",
    "IntegratedGradients", "SmoothGrad", "GradCAM", "GradCAMPlusPlus", "Occlusion", "MeaningfulPerturbation",
    "RISE", "LIME", "ExactShapley", "KernelSHAP", "PermutationShapley", "BiLRP",
    "DeepLift", "DeepLiftShap", "GradientShap", "SmoothGradSquared", "VarGrad",
    "LayerGradientXActivation", "LayerConductance", "NeuronAttribution",
]

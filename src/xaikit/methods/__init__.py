"""Attribution methods, one module per family; every public class is registered by its snake_case name."""
from .gradient import Gradient, InputXGradient
from .propagation import LRP, DeconvNet, ExcitationBackprop, GuidedBackprop

__all__ = ["Gradient", "InputXGradient", "LRP", "GuidedBackprop", "DeconvNet", "ExcitationBackprop"]

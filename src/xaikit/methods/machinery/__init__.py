"""What the attribution methods share, kept apart so that :mod:`xaikit.methods` reads as a list of methods:
baselines, feature groupings, coalition designs and Shapley weights, linear solvers, batched scoring of
perturbed inputs, seeding, the network surrogate of the Shapley estimators, and token ids explained in the
embedding space."""

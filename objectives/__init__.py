"""Preference objectives: pure loss functions over per-sequence log-probs, and their registry.

Importing the package registers the built-in objectives (their modules' @register decorators
run here), so `objectives.registry.get_objective` finds them from anywhere.
"""
from objectives import dpo_margin, dpo_ratios, pairwise, unpaired  # noqa: F401

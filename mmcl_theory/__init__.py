"""mmcl-theory: exact theory and simulations of multimodal contrastive learning under distribution shift.

Implements the mechanisms of Xue, Joshi, Nguyen, Mirzasoleiman, "Understanding the Robustness of
Multi-modal Contrastive Learning to Distribution Shift" (ICLR 2024). Where the paper's constants
are unavailable, the models and closed forms here are this package's own derivations (see README).
"""

__version__ = "0.1.0"

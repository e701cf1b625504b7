"""mmcl-theory: exact theory and simulations of multimodal contrastive learning under distribution shift.

Implements the mechanisms of Xue, Joshi, Nguyen, Mirzasoleiman, "Understanding the Robustness of
Multi-modal Contrastive Learning to Distribution Shift" (ICLR 2024): its Data Models 1 and 2 and
theorems are checked as the paper states them; the models M1, M2, M3 and their closed forms are this
package's own derivations (see README, "What is the paper's and what is ours").
"""

__version__ = "0.1.0"

"""Image data generated here or shipped in an installed package (nothing is downloaded), shared by image workloads.

splits.py          Splits: a train / val / test triple
color_dsprites.py  ColorDSprites rendered on demand from latent indices (pure numpy, same on every machine)
cue_conflict.py    WCST-ML diagonal / off-diagonal sets, every row distinct across all splits and sets
digits.py          scikit-learn's 8 x 8 digits, stratified deterministic split, optional upsampling
corruptions.py     ImageNet-C-like corruptions at severity 1..5 (covariate-shift OOD)
semantic_ood.py    labels (classes, shapes) held out of training (semantic OOD)
"""

from workloads.data.color_dsprites import (
    ColorDSpritesConfig,
    ColorDSpritesDataset,
    ColorDSpritesRenderer,
    sample_latents,
)
from workloads.data.corruptions import CORRUPTIONS, CorruptedDataset, corrupt
from workloads.data.cue_conflict import CueConflictConfig, CueConflictSets, make_cue_conflict_sets
from workloads.data.digits import DigitsConfig, DigitsDataset, digits_splits
from workloads.data.semantic_ood import LabelHoldout, split_by_label
from workloads.data.splits import Splits

__all__ = [
    "CORRUPTIONS",
    "ColorDSpritesConfig",
    "ColorDSpritesDataset",
    "ColorDSpritesRenderer",
    "CorruptedDataset",
    "CueConflictConfig",
    "CueConflictSets",
    "DigitsConfig",
    "DigitsDataset",
    "LabelHoldout",
    "Splits",
    "corrupt",
    "digits_splits",
    "make_cue_conflict_sets",
    "sample_latents",
    "split_by_label",
]

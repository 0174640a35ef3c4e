"""fnac-lab: a workbench for audio-visual sound-source localisation with False Negative Aware
Contrastive learning (FNAC, CVPR 2023)."""

from .config import TrainConfig, preset
from .losses import fnac_losses
from .metrics import ciou, gt_map, summarise
from .models import create_model

__all__ = ["TrainConfig", "preset", "fnac_losses", "ciou", "gt_map", "summarise", "create_model"]
__version__ = "0.1.0"

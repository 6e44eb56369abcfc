"""Architecture re-implementations of the peers, on the same diffusers UNet as SimDA.

These are not the peers' code: they rebuild the layers the papers and public code describe,
so that speed, memory and tuned parameters can be compared on one model, in one process.
"""

from benchmarks.baselines.lvdm import LVDM_TEMPORAL_PARAMETERS, build_lvdm
from benchmarks.baselines.tav import TAV_TUNED_PARAMETERS, build_tav

__all__ = ["LVDM_TEMPORAL_PARAMETERS", "TAV_TUNED_PARAMETERS", "build_lvdm", "build_tav"]

"""The four MMKD objectives (mmkd-method.md, sections 1-4) and their weighted sum, MMKDLoss (section 6).

MMKDLoss is imported from mmkd.objectives.combined (it needs the models package).
"""

from mmkd.objectives.sentence import senta_loss
from mmkd.objectives.structure import struca_loss, struca_reference
from mmkd.objectives.tlm import tlm_loss
from mmkd.objectives.word import gather_candidates, xwcl_loss

__all__ = ["gather_candidates", "senta_loss", "struca_loss", "struca_reference", "tlm_loss", "xwcl_loss"]

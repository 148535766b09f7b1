"""rtb: run-time backdoor protection of images against malicious inpainting.

The library: models behind one inpainter contract, the protection methods, the batched optimizer,
metrics and catalog I/O. It imports neither Ray nor click; the jobs in ``jobs/`` wire it to Ray Data.
"""

from rtb.config import ProtectConfig, config_hash
from rtb.inpainters import Inpainter, load_inpainter
from rtb.protect import ImageStats, ProtectResult, protect

__all__ = ["ImageStats", "Inpainter", "ProtectConfig", "ProtectResult", "config_hash", "load_inpainter", "protect"]
__version__ = "0.1.0"

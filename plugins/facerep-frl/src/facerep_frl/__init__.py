"""facerep-frl: SwAV and MoCo-v2 pretraining on uncurated faces, after Bulat et al.,
"Pre-training strategies and datasets for facial representation learning", ECCV 2022
(arXiv 2103.16554).

Importing this package imports nothing heavy; the objectives live in :mod:`facerep_frl.swav` and
:mod:`facerep_frl.moco` and are imported only when a run builds them.
"""

__version__ = "0.1.0"

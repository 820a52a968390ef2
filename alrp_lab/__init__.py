"""alrp-lab: experiments and ablations for ranking-based detection losses (aLRP Loss).

The loss library (``alrp_lab.losses``) is usable alone in any PyTorch detector; the
command line (``alrp-lab``) trains and evaluates detectors from Hydra configs.
"""

__version__ = "0.1.0"

"""webfg: the ACCV 2022 WebFG 1st-place recipe as a reusable train -> pseudo-label -> retrain workflow."""

__version__ = "0.1.0"

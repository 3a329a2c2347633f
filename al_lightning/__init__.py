"""al_lightning: active learning for MACE interatomic potentials in PyTorch Lightning.

Importing the package imports ``mace`` first (TRAPS: e3nn's constants fail to load under
torch >= 2.6 when e3nn is imported before mace) and filters mace's noisy import warnings.
"""

from al_lightning._compat import setup as _setup

_setup()

__version__ = "0.1.0"

"""airan: one accelerator shared by a 5G/6G radio (O-RAN L1/L2) and AI inference.

The radio's deadlines come first, always; AI inference gets the slack. See
``docs/guarantee.md`` for the scheduling guarantee and how it is tested.
"""

__version__ = "0.1.0"

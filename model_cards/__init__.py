"""Model cards for glat-hf output folders (see model_card.py).

The package is installed with the project (`pip install -e .`; template.md ships as package data), so
`from model_cards import write_model_card` works from any directory, training/train.py included.
"""

from .model_card import ModelCardError, build_model_card, push_to_hub, write_model_card

__all__ = ["ModelCardError", "build_model_card", "push_to_hub", "write_model_card"]

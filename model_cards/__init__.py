"""Model cards for glat-hf output folders (see model_card.py); importable when the repo root is on sys.path."""

from .model_card import ModelCardError, build_model_card, push_to_hub, write_model_card

__all__ = ["ModelCardError", "build_model_card", "push_to_hub", "write_model_card"]

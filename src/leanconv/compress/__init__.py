"""Compressing trained models: planning, surgery, verification, fine-tuning."""

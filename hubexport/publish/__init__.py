"""Publishing an export: its model card (model_card) and its archive (package)."""

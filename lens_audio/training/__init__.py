"""Training: one loop and one resumable run folder, for the organisms' recipes and the SAE trainer."""

"""LLM-written reward and latent-feature programs."""

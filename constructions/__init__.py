"""Hand-built Transformers: the named residual layout, block builders, and one module per construction."""

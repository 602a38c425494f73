"""Generation: the paged latent cache, absorbed-MLA decode, sampling, MTP speculative decoding, continuous
batching, and `generate`."""

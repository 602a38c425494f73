"""Array types for annotations: what an entry point accepts from its caller."""

import numpy as np
from jax import Array

# Token ids, positions and segment ids arrive from the host (a data pipeline, the engine's tables, a user)
# as numpy or already on device; jaxtyping checks the shape and dtype of either.
HostOrDevice = Array | np.ndarray

def from_hf(*a, **k):
    raise NotImplementedError
def to_hf(*a, **k):
    raise NotImplementedError

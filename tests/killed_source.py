"""A data source that dies midway, as a killed process would: the resumption tests of ``xaikit.run``."""
from xaikit.run import Source, TensorSource


class KilledAt(Source):
    """The samples and identity of a ``TensorSource(x, y)``, read one by one; reading sample ``at`` or later raises
    ``KeyboardInterrupt``."""

    has_labels, has_masks = True, False

    def __init__(self, x, y, at):
        self.inner, self.at = TensorSource(x, y), at

    def __len__(self):
        return len(self.inner)

    def describe(self):
        return self.inner.describe()

    def sample(self, index):
        if index >= self.at:
            raise KeyboardInterrupt("killed")
        return self.inner.sample(index)

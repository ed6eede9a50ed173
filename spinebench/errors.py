"""User-facing errors.

Every problem caused by the user's input (a corrupt file, a wrong path, a bad data spec, an unknown model)
is raised as a :class:`SpinebenchError`. The CLI and the demo turn it into one clear line instead of a
traceback; anything else is a bug and keeps its traceback.
"""


class SpinebenchError(Exception):
    """An error the user can act on; ``str(err)`` is the one line shown to them."""


class ImageLoadError(SpinebenchError):
    """A file could not be read as an image (not an image, corrupt, unsupported or absurd)."""


class SpecError(SpinebenchError):
    """A data-source spec string (``aasce=PATH``, ``synth``...) is malformed or names nothing usable."""


class SplitError(SpinebenchError):
    """A split is invalid, e.g. one patient's images fall into more than one split."""


class SynthSettingsError(SpinebenchError, ValueError):
    """Impossible settings for the synthetic generator (no images, an absurd film scale)."""

"""The error of a dataset that cannot be used as asked (imports nothing but the base error)."""

from promptlab.errors import UserError


class DatasetError(UserError):
    """The dataset on disk cannot be used as asked; the message names the path and the fix."""

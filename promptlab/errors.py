"""The base of every error a user can cause (a bad option, file, image or class name).

Each layer subclasses :class:`UserError` where it raises, so the CLI and the app's worker catch them
all in one place and print their one-sentence message instead of a traceback. This module imports
nothing of promptlab, so any layer can use it.
"""


class UserError(ValueError):
    """An error the user can fix; its message names the file, class or option and what to do."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError,)

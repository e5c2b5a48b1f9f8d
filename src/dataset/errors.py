"""The one error type of the data package."""
from src.utils.errors import UserError


class DatasetError(UserError):
    """Input data that cannot be used: a missing path, an unreadable annotation file, an empty result.

    The message is one line naming the file, key or value; entry points print it and exit.
    """

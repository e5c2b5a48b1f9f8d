"""The base of the errors a user can fix (a bad key, a missing file, data that cannot be used)."""


class UserError(Exception):
    """An input problem with a one-line message naming the file, key or value.

    Entry points (``runtime.run_main``) print the message as one ``error:`` line and exit with 2,
    instead of a traceback. Each package derives its own kind: ConfigError, DatasetError,
    CheckpointError, TrainingError.
    """

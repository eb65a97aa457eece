"""The error every unusable piece of training data raises, named by file, flag or document."""


class DataError(ValueError):
    """Training data that cannot be used, named by file or flag."""

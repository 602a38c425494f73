"""The one error type of evaluation: bad input (a missing data file, a malformed row, an unknown task) that the
CLI answers with its sentence, not a traceback."""


class EvalError(ValueError):
    pass

"""Errors the pipeline reports to people: one line, naming the argument at fault."""


class InputError(ValueError):
    """Bad input, detected before any side effect (nothing built, pushed or deployed)."""

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}")


class PipelineError(RuntimeError):
    """A step failed after the inputs were accepted; the message says which and why."""

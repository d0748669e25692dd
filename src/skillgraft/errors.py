"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single `error: ...` line on stderr and exit status 2; anything
else escaping is a bug (exit 1). Messages must name the file, tensor or option at fault.
"""


class UserError(Exception):
    """Bad input or usage: reported as one `error:` line, exit status 2."""


class MachineError(UserError):
    """The machine, not the input, stopped the work (the disk filled up): one `error:` line as
    for bad input, but the same work succeeds once the machine is fixed (a sweep queues the
    trial again)."""

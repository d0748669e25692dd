"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single `error: ...` line on stderr and exit status 2; anything
else escaping is a bug (exit 1). Messages must name the file, tensor or option at fault.
"""


class UserError(Exception):
    """Bad input or usage: reported as one `error:` line, exit status 2."""

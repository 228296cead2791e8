"""Helpers shared by the CLI tests."""


def assert_refused(result, *fragments):
    """Exit code 2 and one line on stderr, starting "error: ", containing every fragment."""
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, message

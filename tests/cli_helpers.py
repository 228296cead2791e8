"""Helpers shared by the CLI tests."""


def assert_refused(result, *fragments):
    """Exit code 2 and one line on stderr, starting "error: ", containing every fragment."""
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, message


# Row fields that differ between two runs of the same cells (when, how long, which folder), and a
# second cheap attack: what the executor tests (Ray, --workers) compare rows with.
TIMING = ("seconds", "started", "finished", "run_id", "stage_seconds")
SECOND_ATTACK = """
[[attacks]]
name = "uncond-3"
condition = "none"
extractor = "sample"
extractor_settings = { ddim_steps = 3, batch_size = 4 }
"""

"""``exception_line``: the one line a failure is reported with names the error, not its preamble."""

from hessverify.errors import exception_line


def test_the_first_line_is_the_message() -> None:
    assert exception_line(ValueError("shapes differ\nsee the docs")) == "shapes differ"


def test_a_preamble_gives_way_to_the_last_line() -> None:
    # TensorFlow's errors raised while tracing a tf.function: "in user code:", frames, then the error
    traced = ValueError("in user code:\n\n    File \"m.py\", line 3, in f  *\n        y = g(x)\n\n"
                        "    ValueError: None values not supported.\n")
    assert exception_line(traced) == "None values not supported."  # the caller names the type, once
    staged = RuntimeError("in user code:\n\n    IndexError: list index out of range\n")
    assert exception_line(staged) == "IndexError: list index out of range"  # another type: kept


def test_an_empty_message_is_empty() -> None:
    assert exception_line(RuntimeError()) == "" and exception_line(RuntimeError("  \n ")) == ""

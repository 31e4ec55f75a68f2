"""``exception_line``: the one line a failure is reported with names the error, not its preamble."""

from hessverify.errors import exception_line


def test_the_first_line_is_the_message() -> None:
    assert exception_line(ValueError("shapes differ\nsee the docs")) == "shapes differ"
    # a first line that ends in ':' is still the message outside TensorFlow's two wrappers
    assert exception_line(ValueError("Expected one of:\n relu\n tanh")) == "Expected one of:"
    assert exception_line(RuntimeError("Error(s) in loading state_dict for Net:\n\tUnexpected key(s)")) == \
        "Error(s) in loading state_dict for Net:"


def test_tensorflows_preambles_give_way_to_the_error() -> None:
    # tracing a tf.function: "in user code:", frames, then the error
    traced = ValueError("in user code:\n\n    File \"m.py\", line 3, in f  *\n        y = g(x)\n\n"
                        "    ValueError: None values not supported.\n")
    assert exception_line(traced) == "None values not supported."  # the caller names the type, once
    staged = RuntimeError("in user code:\n\n    IndexError: list index out of range\n")
    assert exception_line(staged) == "IndexError: list index out of range"  # another type: kept
    # running one: "Graph execution error:", where it was defined, the error, then the node trailer
    ran = RuntimeError("Graph execution error:\n\nDetected at node f defined at (most recent call last):\n"
                       "  File \"m.py\", line 9\n\nfilter_size does not have enough elements, requested 4, got 2\n"
                       "\t [[{{node gradients/Conv2DBackpropFilter}}]] [Op:__inference_f_990]")
    assert exception_line(ran) == "filter_size does not have enough elements, requested 4, got 2"


def test_an_empty_message_is_empty() -> None:
    assert exception_line(RuntimeError()) == "" and exception_line(RuntimeError("  \n ")) == ""


def test_exception_text_names_the_type_once() -> None:
    from hessverify.errors import exception_text

    assert exception_text(ValueError("bad shape\nmore")) == "ValueError: bad shape"
    assert exception_text(ValueError("x" * 300), 10) == "ValueError: " + "x" * 10
    assert exception_text(RuntimeError()) == "RuntimeError"

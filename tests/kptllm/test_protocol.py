import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kptllm.protocols.protocol import (ASSISTANT, IMAGE_TOKEN, KPT_TOKEN, MAX_TEXT_CHARS, PREFIX, ParsedAnswer, ParseError,
                             ParseFailure, Task, build_conversation, clean_text, format_answer, parse_answer)

names = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="[]\x7f",
                                       exclude_categories=("Cc", "Cf", "Cs")),  # control / format: refused
                min_size=1, max_size=60).filter(lambda s: s.strip() and "<image>" not in s and "<kpt>" not in s)
coords = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(names, coords, coords)
def test_detection_answer_round_trip(name, x, y):
    parsed = parse_answer(format_answer(name, (x, y)), Task.VISUAL)
    assert isinstance(parsed, ParsedAnswer)
    assert parsed.semantics == " ".join(name.split())
    assert abs(parsed.xy[0] - x) <= 0.0005 + 1e-12 and abs(parsed.xy[1] - y) <= 0.0005 + 1e-12


@settings(max_examples=200, deadline=None)
@given(names)
def test_semantic_answer_round_trip(name):
    parsed = parse_answer(format_answer(name), Task.SEMANTIC)
    assert parsed == ParsedAnswer(" ".join(name.split()), None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(list(Task)))
def test_parser_never_raises(raw, task):
    result = parse_answer(raw, task)
    assert isinstance(result, (ParsedAnswer, ParseFailure))
    if isinstance(result, ParsedAnswer) and task.has_coordinates:
        assert 0 <= result.xy[0] <= 1 and 0 <= result.xy[1] <= 1


def test_answer_format_is_three_decimals_semantics_first():
    assert format_answer("left eye", (0.41234, 0.3049)) == "left eye [0.412, 0.305]"
    assert format_answer("tail", (1.0, 0.0)) == "tail [1.000, 0.000]"


@pytest.mark.parametrize("raw, reason", [
    ("", ParseError.EMPTY),
    ("   ", ParseError.EMPTY),
    ("left eye", ParseError.NO_COORDINATES),
    ("left eye [0.41, 0.305]", ParseError.MALFORMED_COORDINATES),
    ("left eye [0.412 0.305]", ParseError.MALFORMED_COORDINATES),
    ("left eye [0.412, 0.305", ParseError.MALFORMED_COORDINATES),
    ("left eye [-0.412, 0.305]", ParseError.MALFORMED_COORDINATES),
    ("left eye [0.412, 0.305] and more", ParseError.MALFORMED_COORDINATES),
    ("left eye 0.412, 0.305", ParseError.NO_COORDINATES),
    ("[0.412, 0.305]", ParseError.NO_SEMANTICS),
    ("left eye [1.412, 0.305]", ParseError.OUT_OF_RANGE),
    ("a [0.1, 0.2] b [0.100, 0.200]", ParseError.MALFORMED_COORDINATES),
    ("eye <kpt> [0.100, 0.200]", ParseError.INVALID_TEXT),
])
def test_malformed_detection_answers_are_typed_failures(raw, reason):
    result = parse_answer(raw, Task.TEXT)
    assert isinstance(result, ParseFailure)
    assert result.reason is reason
    assert result.raw == raw


@pytest.mark.parametrize("raw, semantics", [("eye\x00 [0.100, 0.200]", "eye\ufffd"), ("left\u202e eye [0.100, 0.200]", "left\ufffd eye"),
                                            ("\u200b [0.100, 0.200]", "\ufffd"), ("eye\u200d [0.100, 0.200]", "eye\u200d")])
def test_control_and_format_characters_are_shown_not_hidden(raw, semantics):
    """A generated control / format character (bidi override, zero-width space) becomes U+FFFD in the semantics."""
    assert parse_answer(raw, Task.TEXT) == ParsedAnswer(semantics=semantics, xy=(0.1, 0.2))


def test_semantic_answer_with_coordinates_is_rejected():
    assert parse_answer("left eye [0.100, 0.200]", Task.SEMANTIC).reason is ParseError.UNEXPECTED_COORDINATES
    assert parse_answer(None, Task.SEMANTIC).reason is ParseError.EMPTY


def test_conversations_per_task():
    for task in Task:
        conv = build_conversation(task, text="left eye")
        assert conv.prefix == PREFIX and conv.prefix.count(IMAGE_TOKEN) == 1
        assert conv.query.endswith(ASSISTANT)
        assert (KPT_TOKEN in conv.query) == task.has_kpt_prompt
        assert ("left eye" in conv.query) == task.has_text_prompt
        assert conv.answer is None
    train = build_conversation(Task.VISUAL_TEXT, text="left eye", semantics="left eye", xy=(0.5, 0.25))
    assert train.answer == " left eye [0.500, 0.250]"
    assert build_conversation(Task.SEMANTIC, semantics="nose", xy=(0.5, 0.5)).answer == " nose"
    with pytest.raises(ValueError, match="needs a location"):
        build_conversation(Task.TEXT, text="nose", semantics="nose")


@pytest.mark.parametrize("bad, message", [
    ("", "empty"), ("   \n", "empty"), ("x" * (MAX_TEXT_CHARS + 1), "limit"), ("eye\x07", "control"),
    ("eye\x90", "control"), ("left\u202eeye", "control"), ("eye\u200b", "control"), ("\ufeffeye", "control"),
    ("eye [0.1, 0.2]", "reserved for coordinates"), ("the <kpt>", "reserved token"), ("an <image>", "reserved token"),
    (42, "must be a string"),
])
def test_bad_prompt_texts(bad, message):
    with pytest.raises(ValueError, match=message):
        build_conversation(Task.TEXT, text=bad)


def test_clean_text_collapses_whitespace():
    assert clean_text("  left \t eye ") == "left eye"
    assert clean_text("cat 🐈\u200d⬛ nose") == "cat 🐈\u200d⬛ nose"  # an emoji's zero-width joiner is text


def test_out_of_range_target_is_refused():
    with pytest.raises(ValueError, match="outside"):
        format_answer("nose", (1.2, 0.5))


def test_processor_token_memo_returns_fresh_lists_and_follows_the_tokenizer():
    """`_tokens` is memoised for the data loader: the ids must equal a fresh tokenisation, a caller's edit
    must not reach the memo, and a replaced tokenizer must not be answered from the old one's entries."""
    from kptllm.build import build_tiny

    _, processor = build_tiny(seed=0)
    text = "Find the left shoulder in this image."
    first = processor._tokens(text)
    assert first == processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    first.append(-1)
    assert processor._tokens(text) == first[:-1]

    class Shifted:  # a tokenizer that gives other ids for the same text
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [i + 1 for i in original(text, add_special_tokens=add_special_tokens)["input_ids"]]}

    original = processor.tokenizer
    processor.tokenizer = Shifted()
    assert processor._tokens(text) == [i + 1 for i in first[:-1]]

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ffsecure import canonical
from ffsecure.errors import FormatError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_dumps_is_sorted_and_compact():
    assert canonical.dumps({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


@given(json_values)
def test_round_trip_is_canonical(value):
    data = canonical.dumps(value)
    assert canonical.loads_canonical(data) == value


@pytest.mark.parametrize(
    "data, code",
    [
        (b'{"a": 1}', "E_NOT_CANONICAL"),
        (b'{"b":1,"a":2}', "E_NOT_CANONICAL"),
        (b'{"a":1,"a":2}', "E_JSON"),
        (b'{"a":NaN}', "E_JSON"),
        (b"[" * 100 + b"]" * 100, "E_JSON_DEPTH"),
        (b"1" * 40, "E_JSON"),
        (b"\xff\xfe", "E_JSON"),
        (b'{"a":', "E_JSON"),
    ],
)
def test_refusals_have_codes(data, code):
    with pytest.raises(FormatError) as info:
        canonical.loads_canonical(data)
    assert info.value.code == code


def test_size_cap():
    with pytest.raises(FormatError) as info:
        canonical.loads(b"[" + b"1," * 100 + b"1]", max_bytes=50)
    assert info.value.code == "E_JSON_SIZE"


@given(st.binary(max_size=80))
def test_b64_round_trip_and_one_spelling(data):
    import base64

    text = base64.b64encode(data).decode()
    assert canonical.b64decode_canonical(text) == data
    if text.endswith("="):
        # The last character before the padding carries unused low bits; any
        # other character with the same high bits decodes to the same bytes
        # in Python's decoder but is not this record's spelling.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = text.rstrip("=")[-1]
        unused = 0b1111 if text.endswith("==") else 0b11
        twin = alphabet[alphabet.index(last) ^ 1] if unused else last
        other = text.rstrip("=")[:-1] + twin + "=" * (len(text) - len(text.rstrip("=")))
        assert base64.b64decode(other) == data  # Python accepts it ...
        assert canonical.b64decode_canonical(other) is None  # ... this does not


@pytest.mark.parametrize("text", ["AAA", "AA=A", "A A=", "AAAA\n", "####", "ÄAAA"])
def test_b64_refuses_malformed(text):
    assert canonical.b64decode_canonical(text) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":"\\ud800"}',
        b'{"a":"x\\udfffy"}',
        b'{"\\ud800":1}',
        b'{"a":[{"b":{"\\udc00":"c"}}]}',
        b'["ok",["\\udbff"]]',
        b'"\\ud800"',
    ],
)
def test_a_lone_surrogate_in_a_value_or_key_is_refused_with_e_json(data):
    """UTF-8 cannot encode U+D800..U+DFFF: the parser refuses them with its typed error, so
    that no reader meets a UnicodeEncodeError when it re-encodes what it parsed."""
    for parse in (canonical.loads, canonical.loads_canonical):
        with pytest.raises(FormatError) as info:
            parse(data)
        assert info.value.code == "E_JSON" and "surrogate" in info.value.message


def test_an_escaped_surrogate_pair_is_one_character_and_not_canonical():
    assert canonical.loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    with pytest.raises(FormatError) as info:
        canonical.loads_canonical(b'"\\ud83d\\ude00"')
    assert info.value.code == "E_NOT_CANONICAL"


def test_dumps_refuses_a_lone_surrogate_with_a_typed_error():
    for value in ({"a": "\ud800"}, {"\udfff": 1}):
        with pytest.raises(FormatError) as info:
            canonical.dumps(value)
        assert info.value.code == "E_JSON"

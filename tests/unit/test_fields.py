"""The declarative field-spec validator: bounds, bools are not numbers, finite, exact keys."""

import math

import pytest

from aggregator.config import parse_config as parse_aggregator_config
from ffsecure.errors import ConfigError
from ffsecure.records.fields import (
    OMIT,
    AnyOf,
    Bool,
    Field,
    FieldError,
    Float,
    Int,
    List,
    Nullable,
    Opaque,
    Problem,
    Scalars,
    Str,
    Table,
    check,
    check_image_shape,
    is_int,
    is_number,
)


@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, "1", None, [1]])
def test_is_number_refuses_bools_non_finite_values_and_non_numbers(value):
    assert not is_number(value)


@pytest.mark.parametrize("value", [0, -3, 2.5, 1e308, 10**30])
def test_is_number_accepts_finite_ints_and_floats(value):
    assert is_number(value)


def test_is_int_refuses_bools_and_floats():
    assert is_int(3) and not is_int(True) and not is_int(3.0)


def test_int_spec_enforces_both_bounds_and_refuses_bools_and_floats():
    spec = Int(1, 10)
    assert check(spec, 1, "n") == 1 and check(spec, 10, "n") == 10
    for bad, problem in ((0, Problem.BOUNDS), (11, Problem.BOUNDS), (True, Problem.TYPE)):
        with pytest.raises(FieldError) as info:
            check(spec, bad, "n")
        assert info.value.problem is problem and info.value.key == "n"
    with pytest.raises(FieldError, match=r"n must be an integer in \[1, 10\], got 2.0"):
        check(spec, 2.0, "n")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1.0"])
def test_float_spec_refuses_nan_infinity_bools_and_strings(bad):
    with pytest.raises(FieldError) as info:
        check(Float(), bad, "x")
    assert info.value.problem is Problem.TYPE


def test_float_spec_returns_a_float_and_can_exclude_its_lower_bound():
    value = check(Float(0, 1), 1, "x")
    assert value == 1.0 and isinstance(value, float)
    assert check(Float(0, above=True), 0.5, "x") == 0.5
    with pytest.raises(FieldError, match="x must be a number above 0, got 0"):
        check(Float(0, above=True), 0, "x")


def test_str_spec_bounds_length_before_matching_the_whole_pattern():
    spec = Str(1, 8, pattern=r"[a-z]+")
    assert check(spec, "abc", "s") == "abc"
    for bad in ("", "abcdefghi", "abc1", "ABC"):
        with pytest.raises(FieldError) as info:
            check(spec, bad, "s")
        assert info.value.problem is Problem.BOUNDS
    with pytest.raises(FieldError) as info:
        check(spec, 5, "s")
    assert info.value.problem is Problem.TYPE


def test_str_spec_with_options_names_them():
    with pytest.raises(FieldError, match=r"must be one of \['prv', 'rdp'\]"):
        check(Str(options=("prv", "rdp")), "gdp", "dp.accountant")


def test_bool_spec_takes_only_true_and_false():
    assert check(Bool(), False, "b") is False
    with pytest.raises(FieldError):
        check(Bool(), 0, "b")


def test_list_spec_checks_length_each_item_and_distinctness():
    spec = List(Int(0, 9), min_len=1, max_len=3, unique=True)
    assert check(spec, [1, 2], "l") == [1, 2]
    with pytest.raises(FieldError) as info:
        check(spec, (1, 2), "l")  # a list is a JSON/TOML array, never a tuple
    assert info.value.problem is Problem.TYPE
    with pytest.raises(FieldError) as info:
        check(spec, [1, True], "l")
    assert info.value.key == "l[1]" and info.value.problem is Problem.TYPE
    for bad in ([], [1, 2, 3, 4], [1, 1]):
        with pytest.raises(FieldError) as info:
            check(spec, bad, "l")
        assert info.value.key == "l" and info.value.problem is Problem.BOUNDS


def test_nullable_spec_takes_none_or_the_inner_spec():
    assert check(Nullable(Int(0, 1)), None, "k") is None
    with pytest.raises(FieldError, match="or null"):
        check(Nullable(Int(0, 1)), 2, "k")


def test_scalars_spec_refuses_nested_values_non_finite_numbers_and_too_many_keys():
    spec = Scalars(max_keys=2)
    assert check(spec, {"a": None, "b": "x"}, "s") == {"a": None, "b": "x"}
    for bad in ({"a": [1]}, {"a": math.nan}, {1: 2}, {"a": 1, "b": 2, "c": 3}, [("a", 1)]):
        with pytest.raises(FieldError):
            check(spec, bad, "s")


def test_table_refuses_unknown_keys_and_names_all_of_them():
    spec = Table({"a": Int(0, 1)})
    with pytest.raises(FieldError) as info:
        check(spec, {"a": 0, "zz": 1, "b": 2}, "t")
    assert info.value.problem is Problem.UNKNOWN and info.value.keys == ("b", "zz")
    assert "t has unknown keys ['b', 'zz']" in info.value.message


def test_table_requires_keys_without_defaults_and_fills_defaults():
    spec = Table({"need": Int(0, 5), "opt": Field(Str(), default="x")})
    assert check(spec, {"need": 3}, "t") == {"need": 3, "opt": "x"}
    with pytest.raises(FieldError) as info:
        check(spec, {"opt": "y"}, "t")
    assert info.value.problem is Problem.MISSING and info.value.key == "t.need"


def test_optional_keys_marked_omit_stay_absent():
    spec = Table({"a": Field(Int(0, 1), default=OMIT)})
    assert check(spec, {}, "t") == {} and check(spec, {"a": 1}, "t") == {"a": 1}


def test_nested_tables_report_the_dotted_path_of_the_bad_value():
    spec = Table({"outer": Table({"inner": Table({"n": Float(0, 1)})})})
    with pytest.raises(FieldError) as info:
        check(spec, {"outer": {"inner": {"n": math.inf}}})
    assert info.value.key == "outer.inner.n"
    with pytest.raises(FieldError) as info:
        check(spec, {"outer": []})
    assert info.value.key == "outer" and info.value.problem is Problem.TYPE


def test_error_factory_turns_the_field_error_into_the_callers_typed_error():
    def as_config(exc: FieldError) -> ConfigError:
        return ConfigError(f"site.toml key {exc.key}: broken", hint="fix it")

    with pytest.raises(ConfigError) as info:
        check(Table({"n": Int(0, 1)}), {"n": 7}, error=as_config)
    assert info.value.code == "E_CONFIG" and "key n" in info.value.message


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((1, 28, 28), (1, 28, 28)),
        ([3, 8, 64], (3, 8, 64)),
    ],
)
def test_image_shape_rule_accepts_supported_shapes(shape, expected):
    assert check_image_shape(shape, not_three=ValueError, unsupported=KeyError) == expected


@pytest.mark.parametrize(
    "shape, error",
    [
        ((2, 28, 28), KeyError),
        ((1, 30, 28), KeyError),
        ((1, 28, 68), KeyError),
        ((1, 28), ValueError),
        ((True, 28, 28), ValueError),
        ((1.0, 28, 28), ValueError),
        ("128", ValueError),
    ],
)
def test_image_shape_rule_raises_the_callers_error(shape, error):
    def wrap(kind):
        return lambda got: ConfigError(kind.__name__, code=f"E_{kind.__name__.upper()}")

    with pytest.raises(ConfigError) as info:
        check_image_shape(shape, not_three=wrap(ValueError), unsupported=wrap(KeyError))
    assert info.value.message == error.__name__


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "true"])
def test_aggregator_config_refuses_non_finite_and_bool_numbers(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        parse_aggregator_config(f"[server]\nrequest_deadline_s = {value}\n", home=tmp_path)
    assert info.value.code == "E_CONFIG" and "server.request_deadline_s" in info.value.message


def test_float_below_excludes_the_upper_bound():
    spec = Float(0.0, 1.0, above=True, below=True)
    assert check(spec, 0.5) == 0.5
    for bad in (0.0, 1.0, 1.5, True, math.nan):
        with pytest.raises(FieldError):
            check(spec, bad, "d")


def test_str_rule_is_the_id_rule_fullmatch():
    from ffsecure.records.ids import SITE_ID

    spec = Str(rule=SITE_ID)
    assert check(spec, "st-mary") == "st-mary"
    for bad in ("St Mary", "st-mary\n", "a" * 64, 3):
        with pytest.raises(FieldError):
            check(spec, bad, "site_id")


def test_opaque_checks_only_the_type_and_any_of_takes_the_first_match():
    assert check(Opaque(), {"x": [1]}) == {"x": [1]}
    with pytest.raises(FieldError) as info:
        check(Opaque((dict,)), [1], "config")
    assert info.value.problem is Problem.TYPE
    either = List(AnyOf((Str(), Int())))
    assert check(either, ["a", 2]) == ["a", 2]
    for bad in ([True], [1.5], [None]):
        with pytest.raises(FieldError):
            check(either, bad, "classes")


def test_a_dict_default_of_a_nested_table_fills_its_own_defaults():
    spec = Table({"dp": Field(Table({"delta": Field(Float(0, 1), default=None)}), default={})})
    assert check(spec, {}) == {"dp": {"delta": None}}


def _module_manifest(**over):
    from ffsecure.package import ModuleManifest

    good = dict(
        federation_id="fed-test",
        site_id="st-mary",
        module_id="a" * 32,
        created_at="2026-01-01T00:00:00Z",
        generator={"family": "cvae", "config": {}},
        image_shape=(1, 16, 16),
        classes=[0, 1],
        weights_sha256="0" * 64,
        weights_bytes=10,
        dp=None,
        seed=0,
    )
    return ModuleManifest(**{**good, **over})


def test_module_manifest_spec_is_its_key_set_and_keeps_the_codes():
    from ffsecure import federation, package
    from ffsecure.errors import FFSecureError

    assert set(_module_manifest().to_dict()) == set(package.MANIFEST_SPEC.fields)
    assert set(federation.MANIFEST_SPEC.fields) == federation.SIGNED_FIELDS
    bad = [
        ({"module_id": "../x"}, "E_MODULE_ID"),
        ({"seed": True}, "E_MANIFEST_SCHEMA"),
        ({"version": True}, "E_MANIFEST_SCHEMA"),
        ({"dp": {"epsilon": math.nan, "delta": 1e-5}}, "E_MANIFEST_SCHEMA"),
        ({"classes": (0, 1)}, "E_MANIFEST_SCHEMA"),
        ({"site_id": "St Mary"}, "E_MANIFEST_SCHEMA"),
    ]
    for over, code in bad:
        with pytest.raises(FFSecureError) as info:
            _module_manifest(**over)
        assert info.value.code == code, over


def test_evaluation_report_numbers_keep_their_codes():
    from ffsecure.errors import FFSecureError
    from ffsecure.evalreport import EvaluationReport

    good = EvaluationReport("clf-1", 4, 0.75, 0.8, (1.0, 0.5), ((2, 0), (1, 1)))
    assert good.check(2) is good
    record = good.to_dict()
    assert EvaluationReport.from_dict(record) == good
    for over, code in [
        ({"n_test": True}, "E_EVALUATION_RANGE"),
        ({"auroc": math.nan}, "E_EVALUATION_RANGE"),
        ({"per_class_recall": (1.0, math.inf)}, "E_EVALUATION_RANGE"),
        ({"confusion": ((2, 0), (True, 1))}, "E_EVALUATION_RANGE"),
    ]:
        bad = EvaluationReport(**{**good.__dict__, **over})
        with pytest.raises(FFSecureError) as info:
            bad.check(2)
        assert info.value.code == code, over
    for rec in ({**record, "v": True}, {**record, "extra": 1}):
        with pytest.raises(FFSecureError) as info:
            EvaluationReport.from_dict(rec)
        assert info.value.code == "E_EVALUATION_FORMAT"


@pytest.mark.parametrize(
    "extra, key",
    [
        ("[train]\nepochs = true\n", "train.epochs"),
        ("[dp]\ndelta = nan\n", "dp.delta"),
        ("[aggregator]\ntimeout_s = inf\n", "aggregator.timeout_s"),
        ("[dp]\nenabled = 1\n", "dp.enabled"),
    ],
)
def test_site_toml_refuses_bools_and_non_finite_numbers(tmp_path, extra, key):
    from site_node.config import parse_config as parse_site_config

    text = '[site]\nfederation_id = "fed"\nsite_id = "st-mary"\n[data]\nsource = "digits"\n'
    assert parse_site_config(text, tmp_path / "site.toml").classes == ()
    with pytest.raises(ConfigError) as info:
        parse_site_config(text + extra, tmp_path / "site.toml")
    assert info.value.code == "E_CONFIG" and key in info.value.message

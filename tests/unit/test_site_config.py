"""site.toml: defaults, unknown keys refused, bad values name the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ffsecure.errors import ConfigError
from ffsecure.privacy.policy import SiteLimits
from site_node.config import (
    DEFAULT_TOML,
    SCHEMA,
    DPLimits,
    PrivacyCheck,
    SitePrivacy,
    load_config,
    parse_config,
)

MINIMAL = """
[site]
federation_id = "fed-a"
site_id = "st-mary"
[data]
source = "digits"
"""


def test_minimal_config_takes_documented_defaults(tmp_path):
    cfg = parse_config(MINIMAL, tmp_path / "site.toml")
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.key_path == tmp_path / "state" / "keys" / "site.key"
    assert cfg.csr_path == tmp_path / "state" / "site.csr"
    assert cfg.trigger_file == tmp_path / "state" / "train.now"
    assert cfg.passphrase_file is None and cfg.endpoint == ""
    assert (cfg.max_attempts, cfg.base_delay_s, cfg.max_delay_s) == (8, 0.2, 10.0)
    assert cfg.train == {
        "size": "default",
        "epochs": 0,
        "batch_size": 0,
        "lr": 0.0,
        "seed": 0,
        "device": "cpu",
        "threads": 1,
    }
    assert cfg.dp["enabled"] is None and cfg.dp["target_epsilon"] == 0.0
    # the site's own ceilings: 8 per release and, composed, over every DP release
    assert cfg.dp_limits == DPLimits(max_epsilon=8.0, max_total_epsilon=8.0)


def test_the_site_s_epsilon_ceilings_default_to_8_and_the_total_follows_the_ceiling(tmp_path):
    template = parse_config(DEFAULT_TOML, tmp_path / "site.toml")
    assert template.dp_limits == DPLimits(8.0, 8.0) and template.dp_limits.per_release == 8.0
    raised = parse_config(MINIMAL + "[dp]\nmax_epsilon = 12.0\n", tmp_path / "site.toml")
    assert raised.dp_limits == DPLimits(12.0, 12.0)
    text = MINIMAL + "[dp]\nmax_epsilon = 12.0\nmax_total_epsilon = 6.0\n"
    tight = parse_config(text, tmp_path / "site.toml").dp_limits
    assert (tight.per_release, tight.per_release_key) == (6.0, "dp.max_total_epsilon")


def test_the_site_checks_every_module_at_its_own_limits_by_default(tmp_path):
    """[privacy]: the check runs whatever the federation's manifest says, at membership AUROC
    0.55 (the policy's default); the template writes the same, and each limit can be set."""
    assert parse_config(MINIMAL, tmp_path / "site.toml").privacy == SitePrivacy(
        PrivacyCheck.ALWAYS, SiteLimits(max_membership_auroc=0.55)
    )
    assert parse_config(DEFAULT_TOML, tmp_path / "site.toml").privacy == SitePrivacy()
    text = MINIMAL + (
        '[privacy]\ncheck = "federation"\nmax_membership_auroc = 0.6\n'
        "max_membership_tpr_at_1pct_fpr = 0.05\nmax_near_copy_fraction = 0\n"
    )
    own = parse_config(text, tmp_path / "site.toml").privacy
    assert own.check is PrivacyCheck.FEDERATION and own.limits == SiteLimits(0.6, 0.05, 0.0)
    assert (own.runs(required=True), own.runs(required=False)) == (True, False)
    assert SitePrivacy().runs(required=False)


def test_default_toml_parses_and_every_key_is_documented(tmp_path, repo_root):
    cfg = parse_config(DEFAULT_TOML, tmp_path / "site.toml")
    assert cfg.site_id == "my-hospital" and cfg.data_source == "digits"
    doc = (repo_root / "docs" / "site-operator.md").read_text()
    for table, keys in SCHEMA.items():
        for key in keys:
            assert re.search(rf"`{table}\.{key}`", doc), (
                f"{table}.{key} is not in docs/site-operator.md"
            )


def test_relative_paths_follow_the_config_file(tmp_path):
    text = (
        MINIMAL.replace('source = "digits"', 'source = "npz:data/x.npz"')
        + '[pki]\nkey = "/etc/k.key"\n'
    )
    cfg = parse_config(text, tmp_path / "conf" / "site.toml")
    assert cfg.data_source == f"npz:{tmp_path / 'conf' / 'data' / 'x.npz'}"
    assert cfg.key_path == Path("/etc/k.key")


@pytest.mark.parametrize(
    "text, key, fix",
    [
        (MINIMAL + "[trian]\n", "[trian]", "use only"),
        (MINIMAL + "[train]\nepochz = 3\n", "train.epochz", "remove it"),
        (MINIMAL.replace('site_id = "st-mary"', ""), "site.site_id", "add site_id"),
        (
            MINIMAL.replace('site_id = "st-mary"', 'site_id = "St Mary"'),
            "site.site_id",
            "lowercase",
        ),
        (MINIMAL.replace('"digits"', '"mnist"'), "data.source", "npz:PATH"),
        (MINIMAL + "[train]\nepochs = -1\n", "train.epochs", "0 or more"),
        (MINIMAL + '[train]\nsize = "huge"\n', "train.size", "default"),
        (MINIMAL + '[aggregator]\nendpoint = "nohost"\n', "aggregator.endpoint", "host:port"),
        (MINIMAL + "[aggregator]\nchunk_bytes = 10\n", "aggregator.chunk_bytes", "1048576"),
        (MINIMAL + '[dp]\nenabled = "yes"\n', "dp.enabled", "true"),
        (MINIMAL + "[dp]\ndelta = 1.5\n", "dp.delta", "1e-5"),
        (MINIMAL + "[dp]\nmax_epsilon = 0.0\n", "dp.max_epsilon", "8"),
        (MINIMAL + "[dp]\nmax_epsilon = -1.0\n", "dp.max_epsilon", "0.0 or more"),
        (MINIMAL + "[dp]\nmax_epsilon = 1e7\n", "dp.max_epsilon", "8"),
        (MINIMAL + "[dp]\nmax_total_epsilon = 1e7\n", "dp.max_total_epsilon", "max_epsilon"),
        (MINIMAL + '[privacy]\ncheck = "never"\n', "privacy.check", 'check = "always"'),
        (MINIMAL + "[privacy]\ncheck = true\n", "privacy.check", "string"),
        (
            MINIMAL + "[privacy]\nmax_membership_auroc = 1.5\n",
            "privacy.max_membership_auroc",
            "from 0 to 1",
        ),
        (
            MINIMAL + "[privacy]\nmax_near_copy_fraction = -0.01\n",
            "privacy.max_near_copy_fraction",
            "from 0 to 1",
        ),
        (
            MINIMAL + '[privacy]\nmax_membership_tpr_at_1pct_fpr = "0.05"\n',
            "privacy.max_membership_tpr_at_1pct_fpr",
            "from 0 to 1",
        ),
        (MINIMAL + "[privacy]\nmin_members = 10\n", "privacy.min_members", "remove it"),
        (MINIMAL + "[data]\n", "[data]", "TOML"),
        (MINIMAL.replace("[data]", "[other]"), "[other]", "use only"),
        (
            MINIMAL + '[aggregator]\nendpoint = "agg.example:\u00b2"\n',
            "aggregator.endpoint",
            "host:port",
        ),
        (
            MINIMAL + '[aggregator]\nendpoint = "agg.example:\uff18\uff14"\n',
            "aggregator.endpoint",
            "host:port",
        ),
    ],
)
def test_bad_config_names_the_key_and_the_fix(tmp_path, text, key, fix):
    with pytest.raises(ConfigError) as err:
        parse_config(text, tmp_path / "site.toml")
    assert err.value.code == "E_CONFIG"
    assert key in err.value.message or key in (err.value.hint or "") or "TOML" in err.value.message
    assert fix in (err.value.hint or "") or fix in err.value.message


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")

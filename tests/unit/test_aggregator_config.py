"""aggregator.toml parsing: defaults, typed values, unknown keys named."""

import pytest

from aggregator.config import DEFAULT_TOML, load_config, parse_config, write_default_config
from ffsecure.errors import ConfigError


def test_default_text_parses_to_the_dataclass_defaults(tmp_path):
    cfg = parse_config(DEFAULT_TOML, home=tmp_path)
    empty = parse_config("", home=tmp_path)
    assert cfg == empty
    assert cfg.server.listen == "127.0.0.1:8443"
    assert cfg.uploads_dir == tmp_path / "uploads"
    assert cfg.server.request_deadline_s == 30.0
    assert cfg.server.max_concurrent_verifications == 2
    assert (
        parse_config(
            "[server]\nmax_concurrent_verifications = 1\n", home=tmp_path
        ).server.max_concurrent_verifications
        == 1
    )


def test_values_and_relative_paths(tmp_path):
    cfg = parse_config(
        '[server]\nlisten = "127.0.0.1:0"\nshutdown_grace_s = 2\n[uploads]\ndir = "/tmp/x"\n',
        home=tmp_path,
    )
    assert cfg.server.listen == "127.0.0.1:0"
    assert cfg.server.shutdown_grace_s == 2.0 and isinstance(cfg.server.shutdown_grace_s, float)
    assert str(cfg.uploads_dir) == "/tmp/x"


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[server]\nlisten_on = "x"\n', "server.listen_on"),
        ("[srever]\n", "'srever'"),
        ('[server]\nmax_workers = "8"\n', "server.max_workers"),
        ("[server]\nmax_workers = 0\n", "server.max_workers"),
        ("[server]\nrequest_deadline_s = 0\n", "server.request_deadline_s"),
        ('[server]\nrequest_deadline_s = "30"\n', "server.request_deadline_s"),
        ("[server]\nmax_concurrent_verifications = 0\n", "server.max_concurrent_verifications"),
        ('[server]\nmax_concurrent_verifications = "2"\n', "server.max_concurrent_verifications"),
        ('[server]\nlisten = "localhost"\n', "server.listen"),
        ("[limits]\nmax_upload_bytes = -1\n", "limits.max_upload_bytes"),
        ("[server\n", "not valid TOML"),
        ('[server]\nlisten = "127.0.0.1:\u00b2"\n', "server.listen"),
        ('[server]\nlisten = "127.0.0.1:\uff18\uff14\uff14\uff13"\n', "server.listen"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(text, home=tmp_path)
    assert err.value.code == "E_CONFIG"
    assert needle in err.value.message
    assert err.value.hint


def test_write_default_refuses_overwrite_and_load_missing(tmp_path):
    path = write_default_config(tmp_path / "aggregator.toml", listen="127.0.0.1:0")
    assert load_config(path).server.listen == "127.0.0.1:0"
    with pytest.raises(ConfigError):
        write_default_config(path)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.toml")
    assert "aggregator init" in err.value.hint


# -- [store] -------------------------------------------------------------------


def test_store_defaults_to_sqlite_and_postgres_needs_one_dsn(tmp_path):
    assert parse_config("", home=tmp_path).store.backend == "sqlite"
    for text, needle in (
        ('[store]\nbackend = "mysql"\n', "store.backend"),
        ('[store]\nbackend = "postgres"\n', "exactly one of"),
        ('[store]\nbackend = "postgres"\ndsn = "dbname=a"\ndsn_file = "f"\n', "exactly one of"),
        ('[store]\ndsn = "dbname=a"\n', "postgres backend"),
        ('[store]\nbackend = "postgres"\ndsn = "host=\'open"\n', "not a PostgreSQL"),
        ('[store]\nbackend = "postgres"\ndsn_flie = "f"\n', "store.dsn_flie"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(text, home=tmp_path)
        assert needle in info.value.message and info.value.hint, text


def test_store_dsn_file_must_be_private_and_is_read_once(tmp_path):
    import os

    dsn = "host=db.example dbname=ffs user=agg password=s3cret sslmode=verify-full"
    (tmp_path / "store.dsn").write_text(dsn + "\n")
    os.chmod(tmp_path / "store.dsn", 0o644)
    cfg = parse_config('[store]\nbackend = "postgres"\ndsn_file = "store.dsn"\n', home=tmp_path)
    with pytest.raises(ConfigError) as info:
        cfg.store_dsn()
    assert info.value.code == "E_KEY_PERMISSIONS" and "s3cret" not in info.value.message
    os.chmod(tmp_path / "store.dsn", 0o600)
    assert cfg.store_dsn() == dsn


def test_init_config_writes_a_postgres_store_table(tmp_path):
    path = write_default_config(tmp_path / "aggregator.toml", store_backend="postgres")
    cfg = load_config(path)
    assert (cfg.store.backend, cfg.store.dsn_file) == ("postgres", "store.dsn")
    assert cfg.server == parse_config("", home=tmp_path).server

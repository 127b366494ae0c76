use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::storage::s3::{CredentialSource, S3Settings};

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("/etc/pgsafe/pgsafe.toml"))
}

fn err(text: &str) -> String {
    match p(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"
repo = "/var/lib/pgsafe"
jobs = 4
compression = "zstd:3"
checksum = "sha256"
max_rate = "100M"
keep_full = 7
keep_within = "14d"
archive_push_parallel = 8
archive_push_queue_max = "4G"

[cluster.main]
pgdata = "/var/lib/postgresql/16/main"
host = "/var/run/postgresql"
port = 5433
user = "backup"
dbname = "postgres"
sslmode = "disable"
jobs = 8
keep_within = "36h"
archive_get_prefetch = 0

[cluster.reports]
pgdata = "/srv/pg/reports"
conninfo = "host=db2 port=5432 keepalives_idle=10"
sslmode = "verify-full"
compression = "lz4"
"#;

#[test]
fn a_complete_file_is_read() {
    let c = p(FULL).unwrap();
    assert_eq!(
        c.repo,
        Some(RepoLocation::Local(PathBuf::from("/var/lib/pgsafe")))
    );
    assert_eq!(c.defaults.jobs, Some(4));
    assert_eq!(c.defaults.compression, Some(Compression::Zstd { level: 3 }));
    assert_eq!(c.defaults.checksum, Some(ChecksumAlgorithm::Sha256));
    assert_eq!(c.defaults.max_rate, Some(100 << 20));
    assert_eq!(c.defaults.keep_full, Some(7));
    assert_eq!(c.defaults.archive_push_parallel, Some(8));
    assert_eq!(c.defaults.archive_push_queue_max, Some(4 << 30));
    assert_eq!(
        c.defaults.keep_within,
        Some(Duration::from_secs(14 * 86_400))
    );
    let main = &c.clusters["main"];
    assert_eq!(
        main.pgdata.as_deref(),
        Some(Path::new("/var/lib/postgresql/16/main"))
    );
    assert_eq!(main.connection.get("port"), Some("5433"));
    assert_eq!(main.connection.get("user"), Some("backup"));
    // conninfo first, the separate keys over it.
    let reports = &c.clusters["reports"];
    assert_eq!(reports.connection.get("host"), Some("db2"));
    assert_eq!(reports.connection.get("keepalives_idle"), Some("10"));
    assert_eq!(reports.connection.get("sslmode"), Some("verify-full"));
}

#[test]
fn resolution_is_cluster_then_global_then_nothing() {
    let c = p(FULL).unwrap();
    let main = Resolved::for_cluster(Some(&c), Some("main"));
    assert!(main.cluster_found);
    assert_eq!(main.settings.jobs, Some(8), "the cluster's own value");
    assert_eq!(main.settings.keep_full, Some(7), "the global default");
    assert_eq!(main.settings.archive_get_prefetch, Some(0));
    assert_eq!(main.settings.archive_push_queue_max, Some(4 << 30));
    assert_eq!(
        main.settings.keep_within,
        Some(Duration::from_secs(36 * 3600))
    );
    assert_eq!(
        main.local_repo().unwrap(),
        Some(Path::new("/var/lib/pgsafe"))
    );
    let reports = Resolved::for_cluster(Some(&c), Some("reports"));
    assert_eq!(reports.settings.compression, Some(Compression::Lz4));
    assert_eq!(reports.settings.jobs, Some(4));

    let unknown = Resolved::for_cluster(Some(&c), Some("mian"));
    assert!(!unknown.cluster_found);
    assert_eq!(unknown.pgdata, None);
    assert_eq!(unknown.settings, c.defaults);
    let msg = unknown.missing("the data directory", "pgdata", Some(&c));
    assert!(
        msg.contains("no [cluster.mian]") && msg.contains("main, reports"),
        "{msg}"
    );

    let none = Resolved::for_cluster(None, Some("main"));
    assert_eq!(none.settings, Settings::default());
    assert_eq!(none.local_repo().unwrap(), None);
}

#[test]
fn the_connection_string_puts_flags_over_the_file() {
    let c = p(FULL).unwrap();
    let main = Resolved::for_cluster(Some(&c), Some("main"));
    let file_only = main.connection_string(None).unwrap();
    let opts = crate::conninfo::parse_conninfo(&file_only).unwrap();
    assert_eq!(opts.get("host"), Some("/var/run/postgresql"));
    assert_eq!(opts.get("dbname"), Some("postgres"));
    // A database name replaces only dbname.
    let named = main.connection_string(Some("app")).unwrap();
    let opts = crate::conninfo::parse_conninfo(&named).unwrap();
    assert_eq!(opts.get("dbname"), Some("app"));
    assert_eq!(opts.get("port"), Some("5433"));
    // A connection string replaces the file's connection.
    assert_eq!(
        main.connection_string(Some("host=other port=1")).as_deref(),
        Some("host=other port=1")
    );
    let nothing = Resolved::for_cluster(None, None);
    assert_eq!(nothing.connection_string(None), None);
    assert_eq!(nothing.connection_string(Some("db")).as_deref(), Some("db"));
}

#[test]
fn every_key_round_trips() {
    let c = p(FULL).unwrap();
    let text = c.to_toml();
    let back = p(&text).unwrap();
    assert_eq!(back, c, "{text}");
    // Every separate connection key and a conninfo-only one survive too.
    let mut table = ClusterConfig::default();
    for (k, v) in [
        ("service", "svc"),
        ("host", "h1,h2"),
        ("hostaddr", "10.0.0.1"),
        ("port", "5432"),
        ("user", "u with space"),
        ("dbname", "d'b"),
        ("passfile", "/root/.pgpass"),
        ("sslmode", "verify-ca"),
        ("sslrootcert", "/r.crt"),
        ("sslcert", "/c.crt"),
        ("sslkey", "/c.key"),
        ("sslcrl", "/crl"),
        ("sslcrldir", "/crld"),
        ("sslnegotiation", "postgres"),
        ("sslsni", "1"),
        ("channel_binding", "require"),
        ("connect_timeout", "10"),
        ("application_name", "nightly"),
        ("options", "-c statement_timeout=0"),
        ("target_session_attrs", "read-write"),
        ("keepalives_count", "3"),
        ("tcp_user_timeout", "1000"),
    ] {
        table.connection.set(k, v).unwrap();
    }
    table.pgdata = Some(PathBuf::from("/d"));
    table.settings = Settings {
        jobs: Some(1),
        compression: Some(Compression::None),
        checksum: Some(ChecksumAlgorithm::None),
        max_rate: Some(1),
        keep_full: Some(1),
        keep_within: Some(Duration::from_secs(61)),
        archive_compress: Some(Compression::Lz4),
        archive_push_parallel: Some(2),
        archive_push_queue_max: Some(1 << 20),
        archive_get_prefetch: Some(0),
    };
    let every = Config {
        path: PathBuf::from("/etc/pgsafe/pgsafe.toml"),
        repo: Some(RepoLocation::Remote("s3://bucket/prefix".into())),
        s3: S3Settings {
            endpoint: Some("https://minio.example.net:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: Some(false),
            allow_http: Some(true),
            retry_budget: Some(Duration::from_secs(90)),
            credentials: Some(CredentialSource::Env {
                access_key_id: "K".into(),
                secret_access_key: "S".into(),
                session_token: Some("T".into()),
            }),
            ..S3Settings::default()
        },
        defaults: Settings::default(),
        clusters: [("x".to_owned(), table)].into(),
        warnings: Vec::new(),
    };
    let text = every.to_toml();
    assert_eq!(p(&text).unwrap(), every, "{text}");
}

#[test]
fn an_unknown_key_is_named_with_file_and_line() {
    let msg = err("repo = \"/r\"\nkeep_ful = 3\n");
    assert!(msg.contains("keep_ful"), "{msg}");
    assert!(msg.contains("/etc/pgsafe/pgsafe.toml"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");

    let msg = err("[cluster.main]\npgdata = \"/d\"\nhots = \"x\"\n");
    assert!(msg.contains("hots") && msg.contains("line 3"), "{msg}");
    let msg = err("[cluster.\"my db\"]\npgdata = \"/d\"\n");
    assert!(msg.contains("cluster name"), "{msg}");
    let msg = err("[clusters.main]\npgdata = \"/d\"\n");
    assert!(msg.contains("clusters"), "{msg}");
    let e = p("nope = 1").unwrap_err();
    assert_eq!(e.error_kind(), ErrorKind::Usage);
}

#[test]
fn bad_values_are_refused_with_their_key() {
    for (text, needle) in [
        ("keep_within = \"14x\"", "unknown unit"),
        ("keep_within = \"0d\"", "above 0"),
        ("keep_within = \"d\"", "not a duration"),
        ("keep_within = \"99999999999999999999w\"", "not a duration"),
        ("keep_full = 0", "at least 1"),
        ("keep_full = -1", "keep_full"),
        ("jobs = 0", "at least 1"),
        ("jobs = \"four\"", "jobs"),
        ("compression = \"gzip\"", "unknown compression"),
        ("compression = \"zstd:99\"", "invalid zstd level"),
        ("checksum = \"md5\"", "unknown checksum"),
        ("max_rate = \"fast\"", "not a rate"),
        ("max_rate = 0", "above 0"),
        ("repo = \"relative/dir\"", "relative path"),
        ("repo = \"\"", "empty"),
        ("[cluster.main]\npgdata = \"data\"", "relative path"),
        ("[cluster.main]\nconninfo = \"host\"", "missing \"=\""),
    ] {
        let msg = err(text);
        assert!(msg.contains(needle), "{text}: {msg}");
        let key = text
            .rsplit('\n')
            .next()
            .unwrap()
            .split('=')
            .next()
            .unwrap()
            .trim();
        assert!(msg.contains(key), "{text}: the key is not named: {msg}");
        assert!(msg.contains("line"), "{text}: no line: {msg}");
    }
}

#[test]
fn a_password_is_refused_and_never_shown() {
    for text in [
        "[cluster.main]\npassword = \"s3cret\"",
        "password = \"s3cret\"",
        "[cluster.main]\nconninfo = \"host=x password=s3cret\"",
        "[cluster.main]\nconninfo = \"postgresql://u:s3cret@db/x\"",
    ] {
        let msg = err(text);
        assert!(msg.contains("password"), "{text}: {msg}");
        assert!(msg.contains(".pgpass"), "{text}: no advice: {msg}");
        assert!(
            !msg.contains("s3cret"),
            "{text}: the password is shown: {msg}"
        );
    }
}

#[test]
fn a_remote_repository_is_kept_but_not_usable_yet() {
    let c = p("repo = \"s3://bucket/pg\"").unwrap();
    assert_eq!(c.repo, Some(RepoLocation::Remote("s3://bucket/pg".into())));
    let r = Resolved::for_cluster(Some(&c), None);
    let e = r.local_repo().unwrap_err();
    assert!(e.to_string().contains("s3://bucket/pg"), "{e}");
    assert!(e.to_string().contains("not a local path"), "{e}");
}

#[test]
fn durations_and_rates() {
    assert_eq!(
        parse_duration("14d").unwrap(),
        Duration::from_secs(14 * 86_400)
    );
    assert_eq!(
        parse_duration("36h").unwrap(),
        Duration::from_secs(36 * 3600)
    );
    assert_eq!(
        parse_duration("2w").unwrap(),
        Duration::from_secs(14 * 86_400)
    );
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("5min").unwrap(), Duration::from_secs(300));
    assert!(parse_duration("-1d").is_err());
    assert!(parse_duration("1.5d").is_err());
    assert!(parse_duration("").is_err());
    for secs in [1, 59, 60, 3600, 86_400, 7 * 86_400, 90_061] {
        let d = Duration::from_secs(secs);
        assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }
    assert_eq!(parse_rate("512k").unwrap(), 512 << 10);
    assert_eq!(parse_rate("1G").unwrap(), 1 << 30);
    assert!(parse_rate("0").is_err());
    assert!(parse_rate("99999999999999999G").is_err());
}

#[test]
fn load_refuses_a_file_others_can_change() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgsafe.toml");
    std::fs::write(&path, "repo = \"/r\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(load(&path).unwrap().warnings.is_empty());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.error_kind(), ErrorKind::Refused);
    assert!(e.to_string().contains("chmod o-w"), "{e}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    let c = load(&path).unwrap();
    assert!(c.warnings[0].contains("group"), "{:?}", c.warnings);

    // A directory everyone may write (no sticky bit): the file could be replaced.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = load(&path).unwrap_err();
    assert!(e.to_string().contains("replace"), "{e}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    load(&path).unwrap();
}

#[test]
fn find_follows_the_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "repo = \"/a\"\n").unwrap();
    std::fs::write(&b, "repo = \"/b\"\n").unwrap();
    let repo = |c: Option<Config>| c.and_then(|c| c.repo);
    let local = |s: &str| Some(RepoLocation::Local(PathBuf::from(s)));
    assert_eq!(
        repo(find(Some(&a), Some(b.as_os_str())).unwrap()),
        local("/a")
    );
    assert_eq!(repo(find(None, Some(b.as_os_str())).unwrap()), local("/b"));
    // Empty: no config file at all.
    assert_eq!(find(None, Some("".as_ref())).unwrap(), None);
    // An explicit file that does not exist is an error, not "no config".
    let missing = dir.path().join("missing.toml");
    let e = find(Some(&missing), None).unwrap_err();
    assert_eq!(e.error_kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("missing.toml"), "{e}");
    let e = find(None, Some(missing.as_os_str())).unwrap_err();
    assert_eq!(e.error_kind(), ErrorKind::NotFound);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = p(&text);
    }

    /// Text made of the file's own keys and TOML punctuation, so the parser gets past the
    /// syntax and into validation.
    #[test]
    fn never_panics_on_near_valid_files(
        lines in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "repo", "jobs", "compression", "checksum", "max_rate", "keep_full",
                    "keep_within", "archive_compress", "pgdata", "conninfo", "host", "port", "password", "user",
                    "sslmode", "[cluster.main]", "[cluster.\"\"]", "[cluster]", "x",
                ]),
                prop::sample::select(vec![
                    "\"/a\"", "\"a\"", "0", "-1", "1", "99999999999999999999", "\"14d\"",
                    "\"zstd:3\"", "\"s3://b\"", "true", "[1]", "{a=1}", "\"host=x\"",
                    "\"password=x\"", "\"\\u0000\"", "1.5", "\"\"",
                ]),
            ),
            0..12,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(k, v)| if k.starts_with('[') { format!("{k}\n") } else { format!("{k} = {v}\n") })
            .collect();
        if let Ok(c) = p(&text) {
            // Whatever is accepted writes back to an equal config.
            prop_assert_eq!(p(&c.to_toml()).unwrap(), c);
        }
    }
}

#[test]
fn the_s3_table_names_where_the_key_is_never_the_key() {
    let c = p(r#"
repo = "s3://bucket/pg"
[s3]
endpoint = "http://127.0.0.1:9000"
region = "eu-west-1"
path_style = true
credentials_file = "/etc/pgsafe/s3-credentials"
profile = "backup"
"#)
    .unwrap();
    assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.s3.path_style, Some(true));
    assert_eq!(
        c.s3.credentials,
        Some(CredentialSource::File {
            path: "/etc/pgsafe/s3-credentials".into(),
            profile: Some("backup".into())
        })
    );
    assert_eq!(p(&c.to_toml()).unwrap(), c);
    // Every cluster sees the file's table.
    assert_eq!(Resolved::for_cluster(Some(&c), Some("x")).s3, c.s3);
    let c = p("[s3]\ninstance_credentials = true\n").unwrap();
    assert_eq!(c.s3.credentials, Some(CredentialSource::Instance));
    assert_eq!(p(&c.to_toml()).unwrap(), c);
    // An empty table is no table.
    assert!(!p("[s3]\n").unwrap().to_toml().contains("s3"));

    // A key or secret in the file: refused, with the advice, never echoed.
    for key in ["secret_access_key", "access_key_id", "session_token"] {
        let msg = err(&format!("[s3]\n{key} = \"SEEKRIT\"\n"));
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains("credentials_file"), "no advice: {msg}");
        assert!(!msg.contains("SEEKRIT"), "{msg}");
    }
    // An unknown key is named, and the refused ones are not offered.
    let msg = err("[s3]\nendpiont = \"https://x\"\n");
    assert!(msg.contains("endpiont") && msg.contains("line 2"), "{msg}");
    assert!(!msg.contains("`secret_access_key`"), "{msg}");
    for (text, why) in [
        ("[s3]\nprofile = \"x\"\n", "`profile`"),
        ("[s3]\naccess_key_id_env = \"K\"\n", "go together"),
        ("[s3]\nsession_token_env = \"T\"\n", "go together"),
        (
            "[s3]\ncredentials_file = \"/c\"\ninstance_credentials = true\n",
            "one source",
        ),
        ("[s3]\ncredentials_file = \"rel/c\"\n", "relative"),
        ("[s3]\nendpoint = \"minio:9000\"\n", "http"),
        ("[s3]\nregion = \"eu west\"\n", "region"),
        (
            "[s3]\naccess_key_id_env = \"K\"\nsecret_access_key_env = \"1X\"\n",
            "environment variable",
        ),
        ("[s3]\npath_style = \"yes\"\n", "path_style"),
    ] {
        let msg = err(text);
        assert!(msg.contains(why), "{text}: {msg}");
    }
}

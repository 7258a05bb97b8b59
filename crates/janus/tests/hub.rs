//! `janus::hub` against a stub hub on 127.0.0.1: `--model` parsing, the environment, cache
//! layout, downloads of every checkpoint layout, offline mode and every error path.
//!
//! Each test has its own stub server and cache directory and passes [`HubOptions`]
//! explicitly, so tests run in parallel without touching the process environment.

#[path = "support/stub_hub.rs"]
mod stub_hub;

use std::path::{Path, PathBuf};

use candle_core::Device;
use janus::hub::{self, FileProgress, HubError, HubOptions, ModelRef};
use janus::pipeline::{DTypeChoice, Pipeline};
use janus::Error;
use stub_hub::{dead_endpoint, etag, sha256, StubHub, StubRepo};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

fn options(cache: &Path, endpoint: &str) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        retries: 0,
        ..HubOptions::new(cache)
    }
}

fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        offline: true,
        ..options(cache, &dead_endpoint())
    }
}

/// Resolves and collects the progress events as strings.
fn resolve_logged(
    repo: &str,
    revision: &str,
    opts: &HubOptions,
) -> (Result<PathBuf, HubError>, Vec<String>) {
    let mut log = Vec::new();
    let dir = hub::resolve(repo, revision, opts, &mut |p| {
        log.push(match p {
            FileProgress::Started { file, total } => format!("start {file} {total}"),
            FileProgress::Advanced {
                file,
                downloaded,
                total,
            } => format!("at {file} {downloaded}/{total}"),
            FileProgress::Finished { file } => format!("done {file}"),
        })
    });
    (dir, log)
}

fn resolve(repo: &str, revision: &str, opts: &HubOptions) -> Result<PathBuf, HubError> {
    resolve_logged(repo, revision, opts).0
}

fn hub_error(r: Result<PathBuf, HubError>) -> HubError {
    match r {
        Err(e) => e,
        Ok(p) => panic!("expected a hub error, got {}", p.display()),
    }
}

fn snapshot(cache: &Path, repo: &str, sha: &str) -> PathBuf {
    cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(sha)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Paths of `/resolve/` and `/cdn/` requests (downloads and size probes).
fn file_requests(hub: &StubHub) -> Vec<String> {
    hub.seen()
        .into_iter()
        .filter(|s| !s.target.starts_with("/api/"))
        .map(|s| s.target)
        .collect()
}

#[test]
fn model_ref_parse() {
    let dir = fixture("tiny-pro");
    let s = dir.to_str().unwrap();
    assert_eq!(ModelRef::parse(s).unwrap(), ModelRef::Local(dir.clone()));
    for local in ["/no/such/dir", "./tiny", "../x/y", "C:\\models\\x", "~"] {
        assert!(
            matches!(ModelRef::parse(local), Ok(ModelRef::Local(_))),
            "{local}"
        );
    }
    if let Some(home) = std::env::var_os("HOME") {
        assert_eq!(
            ModelRef::parse("~/m/x").unwrap(),
            ModelRef::Local(Path::new(&home).join("m/x"))
        );
    }
    for id in [
        "deepseek-ai/Janus-Pro-1B",
        "deepseek-community/Janus-Pro-7B",
        "a/b",
        "user_1/model.v2",
    ] {
        assert_eq!(ModelRef::parse(id).unwrap(), ModelRef::Hub(id.to_string()));
    }
    for bad in [
        "",
        "Janus-Pro-1B",
        "a/b/c",
        "a/",
        "/",
        "a b/c",
        "-a/b",
        "a/b.",
        "a--b/c",
        "a/b..c",
    ] {
        let err = ModelRef::parse(bad);
        if bad.starts_with('/') {
            continue; // path-like: a local directory that may not exist
        }
        let msg = err.expect_err(bad).to_string();
        assert!(msg.contains("owner/name"), "{bad}: {msg}");
        assert!(msg.contains(&format!("{bad:?}")), "{bad}: {msg}");
    }
}

#[test]
fn options_follow_the_environment() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let o = HubOptions::from_vars(vars(&[("HOME", "/home/u")]));
    assert_eq!(o.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
    assert_eq!(o.endpoint, "https://huggingface.co");
    assert_eq!(o.token, None);
    assert!(!o.offline);
    assert_eq!(o.retries, hub::DEFAULT_RETRIES);

    let o = HubOptions::from_vars(vars(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]));
    assert_eq!(o.cache_dir, Path::new("/xdg/huggingface/hub"));
    let o = HubOptions::from_vars(vars(&[("HOME", "/home/u"), ("HF_HOME", "/hf")]));
    assert_eq!(o.cache_dir, Path::new("/hf/hub"));
    let o = HubOptions::from_vars(vars(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]));
    assert_eq!(o.cache_dir, Path::new("/cache"));
    let o = HubOptions::from_vars(vars(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "")]));
    assert_eq!(o.cache_dir, Path::new("/hf/hub"), "empty counts as unset");

    let o = HubOptions::from_vars(vars(&[
        ("HF_ENDPOINT", "http://127.0.0.1:9/"),
        ("HF_TOKEN", " hf_abc\n"),
    ]));
    assert_eq!(o.endpoint, "http://127.0.0.1:9");
    assert_eq!(o.token.as_deref(), Some("hf_abc"));

    for (v, expected) in [
        ("1", true),
        ("true", true),
        ("YES", true),
        ("on", true),
        ("0", false),
        ("false", false),
        ("", false),
    ] {
        let o = HubOptions::from_vars(|k: &str| (k == "HF_HUB_OFFLINE").then(|| v.to_string()));
        assert_eq!(o.offline, expected, "HF_HUB_OFFLINE={v:?}");
    }
    let o = HubOptions::from_vars(|k: &str| (k == "TRANSFORMERS_OFFLINE").then(|| "1".into()));
    assert!(o.offline);

    // The token file of `huggingface-cli login`, unless HF_TOKEN is set.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
    let hf_home = home.path().to_str().unwrap().to_string();
    let o = HubOptions::from_vars(|k: &str| (k == "HF_HOME").then(|| hf_home.clone()));
    assert_eq!(o.token.as_deref(), Some("hf_from_file"));
    let o = HubOptions::from_vars(|k: &str| match k {
        "HF_HOME" => Some(hf_home.clone()),
        "HF_TOKEN" => Some("hf_env".into()),
        _ => None,
    });
    assert_eq!(o.token.as_deref(), Some("hf_env"));
}

#[test]
fn downloads_sharded_safetensors_then_works_offline() {
    let repo = "test-org/tiny-pro";
    let mut hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-pro"))]);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());

    let (dir, log) = resolve_logged(repo, "main", &opts);
    let dir = dir.unwrap();
    assert_eq!(dir, snapshot(cache.path(), repo, SHA));
    assert_eq!(
        files_in(&dir),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "preprocessor_config.json",
            "processor_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ],
        "only what the model needs (no chat_template.jinja, generation_config.json)"
    );
    // Standard layout: snapshot files link to blobs named by etag, refs/main names the commit.
    let repo_dir = cache.path().join("models--test-org--tiny-pro");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        SHA
    );
    for name in files_in(&dir) {
        let want = std::fs::read(fixture("tiny-pro").join(&name)).unwrap();
        let link = dir.join(&name);
        assert!(link.symlink_metadata().unwrap().is_symlink(), "{name}");
        let blob = std::fs::canonicalize(&link).unwrap();
        // Weights are named by their sha256, which the download was checked against.
        assert_eq!(
            blob,
            repo_dir.join("blobs").join(etag(&name, &want)),
            "{name}"
        );
        assert_eq!(std::fs::read(&link).unwrap(), want, "{name}");
        let size = want.len();
        assert!(log.contains(&format!("start {name} {size}")), "{log:?}");
        assert!(log.contains(&format!("at {name} {size}/{size}")), "{log:?}");
        assert!(log.contains(&format!("done {name}")), "{log:?}");
    }
    let pipe = Pipeline::load(&dir, DTypeChoice::Auto, &Device::Cpu).unwrap();
    assert_eq!(pipe.dir, dir);

    // Cached: one info request, no file requests, no progress.
    let before = file_requests(&hub).len();
    let (again, log) = resolve_logged(repo, "main", &opts);
    assert_eq!(again.unwrap(), dir);
    assert_eq!(file_requests(&hub).len(), before);
    assert!(log.is_empty(), "{log:?}");

    // Offline with the server gone: the cache alone, by branch or by commit.
    hub.stop();
    assert_eq!(resolve(repo, "main", &offline(cache.path())).unwrap(), dir);
    assert_eq!(resolve(repo, SHA, &offline(cache.path())).unwrap(), dir);
    // Online but unreachable: the complete cached snapshot is used.
    assert_eq!(
        resolve(repo, "main", &options(cache.path(), &hub.endpoint())).unwrap(),
        dir
    );
}

#[test]
fn downloads_a_single_pytorch_bin_and_loads_it() {
    let repo = "test-org/tiny-janus";
    let hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-janus"))]);
    let cache = tempfile::tempdir().unwrap();
    let dir = resolve(repo, SHA, &options(cache.path(), &hub.endpoint())).unwrap();
    assert_eq!(dir, snapshot(cache.path(), repo, SHA));
    assert!(files_in(&dir).contains(&"pytorch_model.bin".to_string()));
    Pipeline::load(&dir, DTypeChoice::Auto, &Device::Cpu).unwrap();
    // The revision was a commit: the snapshot is found by it offline.
    assert_eq!(resolve(repo, SHA, &offline(cache.path())).unwrap(), dir);
}

/// A repo with the needed files and the given (fake) weight files.
fn fake_repo(id: &str, weights: &[(&str, &str)]) -> StubRepo {
    let mut repo = StubRepo::new(id, SHA)
        .file("config.json", "{}")
        .file("tokenizer.json", "{}")
        .file("README.md", "readme");
    for (name, body) in weights {
        repo = repo.file(name, *body);
    }
    repo
}

fn index(shards: &[&str]) -> String {
    let map: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| format!("\"t{i}.weight\": \"{s}\", \"u{i}.weight\": \"{s}\""))
        .collect();
    format!(
        "{{\"metadata\": {{}}, \"weight_map\": {{{}}}}}",
        map.join(", ")
    )
}

#[test]
fn picks_the_weight_files_of_each_published_layout() {
    let st_index = index(&[
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]);
    let pt_index = index(&[
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ]);
    let cases: Vec<(StubRepo, Vec<&str>)> = vec![
        // Janus-1.3B.
        (
            fake_repo(
                "o/single-st",
                &[("model.safetensors", "st"), ("pytorch_model.bin", "pt")],
            ),
            vec!["model.safetensors"],
        ),
        // Janus-Pro-1B.
        (
            fake_repo("o/single-bin", &[("pytorch_model.bin", "pt")]),
            vec!["pytorch_model.bin"],
        ),
        // Janus-Pro-7B.
        (
            fake_repo(
                "o/sharded-bin",
                &[
                    ("pytorch_model.bin.index.json", &pt_index),
                    ("pytorch_model-00001-of-00002.bin", "a"),
                    ("pytorch_model-00002-of-00002.bin", "b"),
                ],
            ),
            vec![
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin",
                "pytorch_model.bin.index.json",
            ],
        ),
        // deepseek-community transformers layout (next to an original-layout .bin).
        (
            fake_repo(
                "o/sharded-st",
                &[
                    ("model.safetensors.index.json", &st_index),
                    ("model-00001-of-00002.safetensors", "a"),
                    ("model-00002-of-00002.safetensors", "b"),
                    ("pytorch_model.bin", "pt"),
                ],
            ),
            vec![
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
            ],
        ),
    ];
    let hub = StubHub::start(cases.iter().map(|(r, _)| r.clone()).collect());
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());
    for (repo, weights) in &cases {
        let dir = resolve(&repo.id, "main", &opts).unwrap();
        let mut want: Vec<&str> = vec!["config.json", "tokenizer.json"];
        want.extend(weights);
        want.sort();
        assert_eq!(files_in(&dir), want, "{}", repo.id);
        assert_eq!(
            resolve(&repo.id, "main", &offline(cache.path())).unwrap(),
            dir
        );
    }
}

#[test]
fn a_repo_without_what_the_model_needs_is_an_error_naming_it() {
    let hub = StubHub::start(vec![
        fake_repo("o/no-weights", &[]),
        fake_repo("o/no-tok", &[("model.safetensors", "st")]).without("tokenizer.json"),
        fake_repo(
            "o/lost-shard",
            &[
                (
                    "model.safetensors.index.json",
                    &index(&["a.safetensors", "b.safetensors"]),
                ),
                ("a.safetensors", "a"),
            ],
        ),
        fake_repo(
            "o/escape",
            &[(
                "model.safetensors.index.json",
                &index(&["../../../evil.safetensors"]),
            )],
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());
    let msg = |repo: &str| hub_error(resolve(repo, "main", &opts)).to_string();
    let m = msg("o/no-weights");
    assert!(
        m.contains("o/no-weights@main has no weights") && m.contains("pytorch_model.bin"),
        "{m}"
    );
    let m = msg("o/no-tok");
    assert!(m.contains("o/no-tok@main has no tokenizer.json"), "{m}");
    let m = msg("o/lost-shard");
    assert!(
        m.contains("has no b.safetensors (named by model.safetensors.index.json)"),
        "{m}"
    );
    let err = resolve("o/escape", "main", &opts).unwrap_err().to_string();
    assert!(err.contains("outside the repository"), "{err}");
    assert!(!cache.path().join("evil.safetensors").exists());
}

#[test]
fn offline_without_the_model_cached_says_how_to_get_it() {
    let cache = tempfile::tempdir().unwrap();
    let e = hub_error(resolve(
        "deepseek-ai/Janus-Pro-1B",
        "main",
        &offline(cache.path()),
    ));
    assert!(matches!(e, HubError::NotCached { .. }));
    let want = format!(
        "deepseek-ai/Janus-Pro-1B is not in the Hugging Face cache at {} (offline mode): run once without HF_HUB_OFFLINE=1 or --offline to download it, or pass --model with a local directory",
        cache.path().display()
    );
    assert_eq!(e.to_string(), want);
    let e = hub_error(resolve(
        "deepseek-ai/Janus-Pro-1B",
        "v2",
        &offline(cache.path()),
    ));
    assert!(
        e.to_string()
            .starts_with("deepseek-ai/Janus-Pro-1B@v2 is not in"),
        "{e}"
    );
}

#[test]
fn offline_with_a_partial_snapshot_names_the_missing_file() {
    let repo = "test-org/tiny-pro";
    let hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-pro"))]);
    let cache = tempfile::tempdir().unwrap();
    let dir = resolve(repo, "main", &options(cache.path(), &hub.endpoint())).unwrap();
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = hub_error(resolve(repo, "main", &offline(cache.path())));
    assert!(
        e.to_string().contains(&format!(
            "(offline mode; snapshot {SHA} lacks model-00002-of-00002.safetensors)"
        )),
        "{e}"
    );
    // Online, the missing shard alone is fetched again.
    let before = file_requests(&hub).len();
    resolve(repo, "main", &options(cache.path(), &hub.endpoint())).unwrap();
    let fetched = file_requests(&hub)[before..].to_vec();
    assert!(
        fetched
            .iter()
            .all(|t| t.contains("/cdn/") || t.ends_with("/model-00002-of-00002.safetensors")),
        "{fetched:?}"
    );
    assert!(resolve(repo, "main", &offline(cache.path())).is_ok());
}

#[test]
fn a_snapshot_without_a_ref_is_found_by_its_commit_only() {
    let repo = "test-org/tiny-pro";
    let hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-pro"))]);
    let cache = tempfile::tempdir().unwrap();
    let dir = resolve(repo, "main", &options(cache.path(), &hub.endpoint())).unwrap();
    // As huggingface_hub leaves a download by commit hash.
    let refs = cache.path().join("models--test-org--tiny-pro/refs");
    std::fs::remove_dir_all(&refs).unwrap();
    assert!(matches!(
        hub_error(resolve(repo, "main", &offline(cache.path()))),
        HubError::NotCached { .. }
    ));
    assert_eq!(resolve(repo, SHA, &offline(cache.path())).unwrap(), dir);
    // Online resolution (all cached) writes the ref back.
    resolve(repo, "main", &options(cache.path(), &hub.endpoint())).unwrap();
    assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), SHA);
}

#[test]
fn unknown_repo_and_revision_are_404s_naming_them() {
    let hub = StubHub::start(vec![fake_repo("o/exists", &[("model.safetensors", "st")])]);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());
    let e = hub_error(resolve("o/missing", "main", &opts));
    let url = format!("{}/api/models/o/missing/revision/main", hub.endpoint());
    assert_eq!(
        e.to_string(),
        format!(
            "o/missing: no such model repository on {} (HTTP 404 for {url}), and no local directory of that name exists",
            hub.endpoint()
        )
    );
    let e = hub_error(resolve("o/exists", "nope", &opts));
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("o/exists has no revision \"nope\""),
        "{e}"
    );
    assert!(!cache.path().join("models--o--missing/snapshots").exists());
}

#[test]
fn private_repo_needs_the_token_sent_as_bearer() {
    let repo = "test-org/private";
    let hub = StubHub::start(vec![
        StubRepo::from_dir(repo, SHA, &fixture("tiny-janus")).with_token("hf_secret")
    ]);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());
    let e = hub_error(resolve(repo, "main", &opts));
    let url = format!("{}/api/models/{repo}/revision/main", hub.endpoint());
    assert_eq!(
        e.to_string(),
        format!("{url} answered 401 Unauthorized: {repo} does not exist, or it is private or gated and needs a token: set HF_TOKEN or run `huggingface-cli login`")
    );
    let wrong = HubOptions {
        token: Some("hf_wrong".into()),
        ..opts.clone()
    };
    let e = hub_error(resolve(repo, "main", &wrong));
    assert!(e.to_string().contains("was rejected"), "{e}");

    let before = hub.seen().len();
    let good = HubOptions {
        token: Some("hf_secret".into()),
        ..opts
    };
    let dir = resolve(repo, "main", &good).unwrap();
    assert!(dir.join("pytorch_model.bin").is_file());
    let seen = &hub.seen()[before..];
    assert!(seen.iter().any(|s| s.target.starts_with("/cdn/")));
    for s in seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer hf_secret"),
            "{}",
            s.target
        );
    }
}

#[test]
fn an_interrupted_download_leaves_no_file_and_resumes() {
    let repo = "test-org/tiny-pro";
    let shard = "model-00001-of-00002.safetensors";
    let want = std::fs::read(fixture("tiny-pro").join(shard)).unwrap();
    let hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-pro"))]);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());
    let half = want.len() / 2;
    hub.truncate(shard, half, 1);

    let e = hub_error(resolve(repo, "main", &opts));
    let url = format!("{}/{repo}/resolve/main/{shard}", hub.endpoint());
    assert!(matches!(e, HubError::Download { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("downloading {shard} of {repo} from {url} failed:")),
        "{msg}"
    );
    // Neither the snapshot nor the blob store has the file; only the resumable part.
    let dir = snapshot(cache.path(), repo, SHA);
    assert!(!dir.join(shard).exists());
    let blobs = cache.path().join("models--test-org--tiny-pro/blobs");
    let tag = etag(shard, &want);
    assert_eq!(tag, sha256(&want));
    assert!(!blobs.join(&tag).exists());
    let part = blobs.join(format!("{tag}.part"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), half as u64);
    assert!(matches!(
        hub_error(resolve(repo, "main", &offline(cache.path()))),
        HubError::NotCached { .. }
    ));

    // The next run resumes from the part and completes the file.
    let before = hub.seen().len();
    let dir = resolve(repo, "main", &opts).unwrap();
    assert_eq!(std::fs::read(dir.join(shard)).unwrap(), want);
    let resumed = format!("bytes={half}-");
    assert!(
        hub.seen()[before..]
            .iter()
            .any(|s| s.range.as_deref() == Some(resumed.as_str())),
        "no resumed range request"
    );
    assert!(!part.exists());
}

#[test]
fn retries_resume_an_interrupted_download_in_one_run() {
    let repo = "test-org/tiny-janus";
    let file = "pytorch_model.bin";
    let want = std::fs::read(fixture("tiny-janus").join(file)).unwrap();
    let hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-janus"))]);
    hub.truncate(file, want.len() / 3, 1);
    let cache = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        retries: 2,
        ..options(cache.path(), &hub.endpoint())
    };
    let (dir, log) = resolve_logged(repo, "main", &opts);
    let dir = dir.unwrap();
    assert_eq!(std::fs::read(dir.join(file)).unwrap(), want);
    let n = want.len();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with(&format!("start {file}")))
            .count(),
        1,
        "one bar per file: {log:?}"
    );
    assert!(log.contains(&format!("at {file} {n}/{n}")));
}

#[test]
fn a_download_of_the_wrong_size_is_removed() {
    let repo = "test-org/liar";
    let hub =
        StubHub::start(vec![fake_repo(repo, &[("model.safetensors", "abcdef")])
            .listing_size("model.safetensors", 10)]);
    let cache = tempfile::tempdir().unwrap();
    let e = hub_error(resolve(
        repo,
        "main",
        &options(cache.path(), &hub.endpoint()),
    ));
    assert_eq!(
        e.to_string(),
        format!("{repo}: the downloaded model.safetensors has 6 bytes but the hub lists 10; it was removed from the cache, run again to download it afresh")
    );
    let dir = snapshot(cache.path(), repo, SHA);
    assert!(!dir.join("model.safetensors").exists());
    let blobs = cache.path().join("models--test-org--liar/blobs");
    assert!(!blobs.join(etag("model.safetensors", b"abcdef")).exists());
}

#[test]
fn a_download_with_the_wrong_bytes_is_removed() {
    let repo = "test-org/corrupt";
    let file = "model.safetensors";
    let (good, bad) = (b"weights-v1".as_slice(), b"weights-XX".as_slice());
    // The listing and etag give the sha256 of `good`; the CDN sends `bad`, of the same size.
    let hub = StubHub::start(vec![
        fake_repo(repo, &[(file, "weights-v1")]).serving(file, bad)
    ]);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &hub.endpoint());
    let e = hub_error(resolve(repo, "main", &opts));
    assert!(matches!(e, HubError::HashMismatch { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{repo}: the downloaded {file} has SHA-256 {} but the hub lists {}; it was removed from the cache, run again to download it afresh",
            sha256(bad),
            sha256(good)
        )
    );
    // Neither the snapshot link nor the blob (named by the expected sha256) is left.
    let link = snapshot(cache.path(), repo, SHA).join(file);
    assert!(link.symlink_metadata().is_err(), "{} kept", link.display());
    let blobs = cache.path().join("models--test-org--corrupt/blobs");
    assert!(!blobs.join(sha256(good)).exists());
    for b in files_in(&blobs) {
        assert_ne!(std::fs::read(blobs.join(&b)).unwrap(), bad, "blob {b} kept");
    }
    assert!(matches!(
        hub_error(resolve(repo, "main", &offline(cache.path()))),
        HubError::NotCached { .. }
    ));

    // Once the right bytes arrive, the next run downloads the file afresh and keeps it.
    drop(hub);
    let hub = StubHub::start(vec![fake_repo(repo, &[(file, "weights-v1")])]);
    let dir = resolve(repo, "main", &options(cache.path(), &hub.endpoint())).unwrap();
    assert_eq!(std::fs::read(dir.join(file)).unwrap(), good);
    assert_eq!(
        std::fs::canonicalize(dir.join(file)).unwrap(),
        std::fs::canonicalize(blobs.join(sha256(good))).unwrap()
    );
}

#[test]
fn a_server_that_is_not_listening_is_named() {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = dead_endpoint();
    let e = hub_error(resolve(
        "test-org/tiny-pro",
        "main",
        &options(cache.path(), &endpoint),
    ));
    assert!(matches!(e, HubError::Unreachable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot reach {endpoint}/api/models/test-org/tiny-pro/revision/main: Connection Failed"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("HF_ENDPOINT") && msg.contains("--offline"),
        "{msg}"
    );
}

#[test]
fn invalid_repo_ids_and_revisions_are_refused_before_any_request() {
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path(), &dead_endpoint());
    let e = hub_error(resolve("not-a-repo", "main", &opts));
    assert!(matches!(e, HubError::InvalidModel(_)));
    // The library's error wraps hub errors with the same message.
    let msg = e.to_string();
    let wrapped = Error::from(e);
    assert!(matches!(wrapped, Error::Hub(HubError::InvalidModel(_))));
    assert_eq!(wrapped.to_string(), msg);
    let e = resolve("o/n", "", &opts).unwrap_err();
    assert!(matches!(e, HubError::EmptyRevision), "{e:?}");
    assert_eq!(e.to_string(), "the revision is empty");
}

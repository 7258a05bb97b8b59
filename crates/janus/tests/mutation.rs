//! Hostile files: seeded mutants of the fixtures fed to every public loader.
//!
//! Each test takes valid inputs from `fixtures/`, mutates them (bit flips, 0x00/0xFF/random
//! overwrites, truncation, duplicated/deleted/inserted ranges, and for JSON structure-aware
//! edits: huge/negative/zero numbers, deleted keys, values of the wrong type) and feeds each
//! mutant to the loader under `catch_unwind`. Every call must return `Ok` or a clean `Err`;
//! a panic fails the test naming the input, the seed and the mutation, so it can be replayed.
//! The PRNG is a splitmix64 in this file, so runs are reproducible without a dependency.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use candle_core::Device;
use janus::config::JanusConfig;
use janus::info::ModelInfo;
use janus::processor::{load_image_from_memory, ImageProcessorConfig, JanusTokenizer};
use janus::weights::TensorStore;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
/// Base seed; mutant `i` of a format uses `SEED ^ (format tag) + i`.
const SEED: u64 = 0x4a41_4e55_535f_4d55;

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("reading fixture {rel}: {e}"))
}

/// splitmix64 (Steele et al.): tiny, full-period, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

// ---------------------------------------------------------------------------------------
// Byte-level mutations

/// A position in `0..len`, half the time inside `hot` (the header, where most of the
/// parsing happens) when it is non-empty.
fn position(rng: &mut Rng, len: usize, hot: &std::ops::Range<usize>) -> usize {
    let hot = hot.start.min(len)..hot.end.min(len);
    if !hot.is_empty() && rng.below(2) == 0 {
        hot.start + rng.below(hot.len())
    } else {
        rng.below(len.max(1))
    }
}

/// Applies one random byte-level mutation to `data` and returns its description.
fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, hot: &std::ops::Range<usize>) -> String {
    if data.is_empty() {
        data.push(rng.byte());
        return "grow empty".into();
    }
    let len = data.len();
    match rng.below(7) {
        0 => {
            let n = 1 + rng.below(8);
            let mut at = Vec::new();
            for _ in 0..n {
                let p = position(rng, len, hot);
                data[p] ^= 1 << rng.below(8);
                at.push(p);
            }
            format!("flip bits at {at:?}")
        }
        1 => {
            let v = [0x00, 0xff, rng.byte()][rng.below(3)];
            let p = position(rng, len, hot);
            let n = (1 + rng.below(8)).min(len - p);
            data[p..p + n].fill(v);
            format!("overwrite {n} bytes at {p} with {v:#04x}")
        }
        2 => {
            let p = position(rng, len, hot);
            data.truncate(p);
            format!("truncate at {p}")
        }
        3 => {
            let p = position(rng, len, hot);
            let n = (1 + rng.below(64)).min(len - p);
            let copy = data[p..p + n].to_vec();
            let q = position(rng, len, hot);
            data.splice(q..q, copy);
            format!("duplicate {n} bytes from {p} to {q}")
        }
        4 => {
            let p = position(rng, len, hot);
            let n = (1 + rng.below(64)).min(len - p);
            data.drain(p..p + n);
            format!("delete {n} bytes at {p}")
        }
        5 => {
            let p = position(rng, len, hot);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            data.splice(p..p, bytes);
            format!("insert {n} random bytes at {p}")
        }
        _ => {
            // An interesting little-endian integer (a length, an offset, a dimension).
            let v: u64 = [u64::MAX, 1 << 40, u32::MAX as u64, 0x7fff_ffff, 0][rng.below(5)];
            let p = position(rng, len, hot);
            let n = [2, 4, 8][rng.below(3)].min(len - p);
            data[p..p + n].copy_from_slice(&v.to_le_bytes()[..n]);
            format!("write {v:#x} as {n} bytes at {p}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// Structure-aware JSON mutations

/// Paths (object keys / array indices) of every node of `v`, root excluded.
fn json_paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(Value::String(k.clone()));
                out.push(prefix.clone());
                json_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            // Long arrays (tokenizer merges, vocabularies) are sampled, not walked whole.
            for (i, child) in items.iter().enumerate().take(16) {
                prefix.push(Value::from(i));
                out.push(prefix.clone());
                json_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn json_get_mut<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |node, key| match key {
        Value::String(k) => &mut node[k.as_str()],
        Value::Number(i) => &mut node[i.as_u64().unwrap_or(0) as usize],
        _ => unreachable!("paths hold keys and indices only"),
    })
}

/// Applies one structure-aware edit to `v`; `None` when the document has no nodes.
fn mutate_json(rng: &mut Rng, v: &mut Value) -> Option<String> {
    let mut paths = Vec::new();
    json_paths(v, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        return None;
    }
    // Prefer numbers: they are what sizes and ids are made of.
    let numbers: Vec<&Vec<Value>> = paths
        .iter()
        .filter(|p| json_get_mut(&mut v.clone(), p).is_number())
        .collect();
    let path = if !numbers.is_empty() && rng.below(2) == 0 {
        numbers[rng.below(numbers.len())].clone()
    } else {
        paths[rng.below(paths.len())].clone()
    };
    let shown = serde_json::to_string(&path).unwrap_or_default();
    let replacement: Value = match rng.below(10) {
        0 => {
            // Delete the key (or array element).
            let (last, parent) = path.split_last()?;
            match (json_get_mut(v, parent), last) {
                (Value::Object(map), Value::String(k)) => {
                    map.remove(k);
                }
                (Value::Array(items), Value::Number(i)) => {
                    items.remove(i.as_u64().unwrap_or(0) as usize);
                }
                _ => {}
            }
            return Some(format!("delete {shown}"));
        }
        1 => Value::from(u64::MAX),
        2 => Value::from(i64::MIN),
        3 => Value::from(-1),
        4 => Value::from(0),
        5 => Value::from(1e300),
        6 => Value::from(1u64 << 40),
        7 => Value::Null,
        8 => Value::from("x"),
        _ => [Value::Array(vec![]), serde_json::json!({})][rng.below(2)].clone(),
    };
    let text = replacement.to_string();
    *json_get_mut(v, &path) = replacement;
    Some(format!("set {shown} = {text}"))
}

/// A mutant of a JSON document: structure-aware half the time, byte-level otherwise.
fn mutate_json_bytes(rng: &mut Rng, original: &[u8]) -> (Vec<u8>, String) {
    if rng.below(2) == 0 {
        if let Ok(mut v) = serde_json::from_slice::<Value>(original) {
            let mut what = Vec::new();
            for _ in 0..1 + rng.below(3) {
                what.extend(mutate_json(rng, &mut v));
            }
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            return (bytes, what.join("; "));
        }
    }
    let mut data = original.to_vec();
    let what = mutate_bytes(rng, &mut data, &(0..0));
    (data, what)
}

/// Range of a safetensors file's length prefix and JSON header.
fn safetensors_header(data: &[u8]) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8])) as usize;
    0..8 + n
}

/// A mutant of a safetensors file: byte-level (biased to the header) or a structure-aware
/// edit of the JSON header (shapes, offsets, dtypes), re-framed with a correct length prefix
/// so the edit reaches the validation past the framing.
fn mutate_safetensors(rng: &mut Rng, original: &[u8]) -> (Vec<u8>, String) {
    let hot = safetensors_header(original);
    if rng.below(2) == 0 {
        if let Ok(mut header) = serde_json::from_slice::<Value>(&original[hot.clone()][8..]) {
            let mut what = Vec::new();
            for _ in 0..1 + rng.below(3) {
                what.extend(mutate_json(rng, &mut header));
            }
            let json = serde_json::to_vec(&header).unwrap_or_default();
            let mut data = (json.len() as u64).to_le_bytes().to_vec();
            data.extend_from_slice(&json);
            data.extend_from_slice(&original[hot.end..]);
            return (data, format!("header: {}", what.join("; ")));
        }
    }
    let mut data = original.to_vec();
    let what = mutate_bytes(rng, &mut data, &hot);
    (data, what)
}

// ---------------------------------------------------------------------------------------
// The harness

// The message and location of the last panic on this thread, and whether the thread is
// inside a mutant's call (where the hook stays quiet: the loaders catch some dependency
// panics on purpose, and those are not failures).
thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
    static IN_MUTANT: Cell<bool> = const { Cell::new(false) };
}

fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_MUTANT.with(Cell::get) {
                return default(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let at = info.location().map(|l| l.to_string()).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg} at {at}"));
        }))
    });
}

/// Per-format tallies: mutants tried, `Ok`s, and `Err`s by the error's variant.
#[derive(Default)]
struct Tally {
    tried: usize,
    ok: usize,
    errors: BTreeMap<String, usize>,
    panics: Vec<String>,
}

impl Tally {
    /// Runs `call` on one mutant, recording its outcome.
    fn run(&mut self, label: &str, call: impl FnOnce() -> janus::Result<()>) {
        self.tried += 1;
        IN_MUTANT.with(|m| m.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(call));
        IN_MUTANT.with(|m| m.set(false));
        match outcome {
            Ok(Ok(())) => self.ok += 1,
            Ok(Err(e)) => *self.errors.entry(error_kind(&e)).or_default() += 1,
            Err(_) => {
                let msg = LAST_PANIC.with(|p| p.borrow().clone());
                self.panics.push(format!("{label}: panicked: {msg}"));
            }
        }
    }

    /// Prints the tally and fails on any panic or on a vacuous run.
    fn check(self, format: &str, min_tried: usize) {
        let errs: usize = self.errors.values().sum();
        eprintln!(
            "mutation {format}: {} mutants, {} ok, {errs} err {:?}, {} panics",
            self.tried,
            self.ok,
            self.errors,
            self.panics.len()
        );
        assert!(
            self.panics.is_empty(),
            "{format}: {} mutant(s) panicked:\n{}",
            self.panics.len(),
            self.panics.join("\n")
        );
        assert!(
            self.tried >= min_tried,
            "{format}: only {} mutants",
            self.tried
        );
        assert!(
            errs >= self.tried / 20,
            "{format}: only {errs} of {} mutants were refused",
            self.tried
        );
    }
}

/// The error's variant name (`Weights`, `Config`, ...), a coarse kind for the tallies.
fn error_kind(e: &janus::Error) -> String {
    let dbg = format!("{e:?}");
    dbg.split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("")
        .to_string()
}

/// Mutants `0..count` of one format: `make(rng)` builds a mutant and describes it, and
/// `feed(bytes)` hands it to the loader.
fn fuzz(
    format: &str,
    tag: u64,
    count: usize,
    mut make: impl FnMut(&mut Rng) -> (Vec<u8>, String),
    mut feed: impl FnMut(&[u8]) -> janus::Result<()>,
) -> Tally {
    quiet_panics();
    let mut tally = Tally::default();
    for i in 0..count as u64 {
        let seed = (SEED ^ tag).wrapping_add(i);
        let mut rng = Rng(seed);
        let (bytes, what) = make(&mut rng);
        let label = format!("{format} seed {seed:#x} ({what})");
        tally.run(&label, || feed(&bytes));
    }
    tally
}

/// Writes `bytes` to `dir/name`.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
}

/// Opens the store of `dir` and reads every tensor it lists.
fn open_and_read_all(dir: &Path) -> janus::Result<()> {
    let store = TensorStore::open(dir)?;
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        store.load(&name, &Device::Cpu)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The formats

#[test]
fn safetensors_mutants_are_refused_or_read() {
    let tmp = tempfile::tempdir().unwrap();
    let original = read("models/tiny-pro/model-00002-of-00002.safetensors");
    let tally = fuzz(
        "safetensors",
        1,
        1000,
        |rng| mutate_safetensors(rng, &original),
        |bytes| {
            put(tmp.path(), "model.safetensors", bytes);
            open_and_read_all(tmp.path())
        },
    );
    tally.check("safetensors", 1000);
}

#[test]
fn safetensors_index_mutants_are_refused_or_read() {
    let tmp = tempfile::tempdir().unwrap();
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        std::os::unix::fs::symlink(
            fixture(&format!("models/tiny-pro/{shard}")),
            tmp.path().join(shard),
        )
        .unwrap();
    }
    let original = read("models/tiny-pro/model.safetensors.index.json");
    let tally = fuzz(
        "safetensors index",
        2,
        300,
        |rng| mutate_json_bytes(rng, &original),
        |bytes| {
            put(tmp.path(), "model.safetensors.index.json", bytes);
            TensorStore::open(tmp.path()).map(drop)
        },
    );
    tally.check("safetensors index", 300);
}

#[test]
fn pytorch_mutants_are_refused_or_read() {
    let tmp = tempfile::tempdir().unwrap();
    let original = read("models/tiny-janus/pytorch_model.bin");
    // The pickle (`*/data.pkl`) and the zip's central directory at the end.
    let pkl = original
        .windows(8)
        .position(|w| w == b"data.pkl")
        .unwrap_or(0);
    let hot = pkl..pkl + 16 * 1024;
    let tail = original.len().saturating_sub(4096)..original.len();
    let tally = fuzz(
        "pytorch",
        3,
        800,
        |rng| {
            let mut data = original.clone();
            let hot = if rng.below(3) == 0 {
                tail.clone()
            } else {
                hot.clone()
            };
            let what = mutate_bytes(rng, &mut data, &hot);
            (data, what)
        },
        |bytes| {
            put(tmp.path(), "pytorch_model.bin", bytes);
            open_and_read_all(tmp.path())
        },
    );
    tally.check("pytorch", 800);
}

#[test]
fn config_mutants_are_refused_or_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    let originals = [
        read("models/tiny-pro/config.json"),
        read("models/tiny-janus/config.json"),
    ];
    let tally = fuzz(
        "config.json",
        4,
        3000,
        |rng| {
            let which = rng.below(2);
            let (bytes, what) = mutate_json_bytes(rng, &originals[which]);
            (bytes, format!("model {which}: {what}"))
        },
        |bytes| {
            put(tmp.path(), "config.json", bytes);
            let cfg = JanusConfig::from_file(&path)?;
            // The derived sizes every consumer reads must not overflow or divide by zero.
            let _ = (cfg.gen_image_tokens(), cfg.gen_image_size());
            let _ = cfg.vision.num_image_tokens();
            Ok(())
        },
    );
    tally.check("config.json", 3000);
}

#[test]
fn preprocessor_config_mutants_are_refused_or_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(ImageProcessorConfig::FILE_NAME);
    let originals = [
        read("models/tiny-pro/preprocessor_config.json"),
        read("models/tiny-janus/preprocessor_config.json"),
    ];
    let tally = fuzz(
        "preprocessor_config.json",
        5,
        1500,
        |rng| {
            let which = rng.below(2);
            let (bytes, what) = mutate_json_bytes(rng, &originals[which]);
            (bytes, format!("model {which}: {what}"))
        },
        |bytes| {
            put(tmp.path(), ImageProcessorConfig::FILE_NAME, bytes);
            let cfg = ImageProcessorConfig::from_file(&path)?;
            let _ = cfg.background_color();
            Ok(())
        },
    );
    tally.check("preprocessor_config.json", 1500);
}

#[test]
fn tokenizer_mutants_are_refused_or_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    let original = read("models/tiny-pro/tokenizer.json");
    let tally = fuzz(
        "tokenizer.json",
        6,
        400,
        |rng| mutate_json_bytes(rng, &original),
        |bytes| {
            put(tmp.path(), "tokenizer.json", bytes);
            let tok = JanusTokenizer::from_file(&path)?;
            let ids = tok.encode("A cat <image_placeholder> on a mat.")?;
            tok.decode(&ids, true)?;
            Ok(())
        },
    );
    tally.check("tokenizer.json", 400);
}

#[test]
fn image_mutants_are_refused_or_decoded() {
    let names = [
        "images/tiny.png",
        "images/strip.png",
        "images/odd.png",
        "images/photo.jpg",
        "images/lossless.webp",
    ];
    let originals: Vec<Vec<u8>> = names.iter().map(|n| read(n)).collect();
    let tally = fuzz(
        "images",
        7,
        3000,
        |rng| {
            let which = rng.below(originals.len());
            let mut data = originals[which].clone();
            // Headers and chunk tables sit in the first few hundred bytes.
            let what = mutate_bytes(rng, &mut data, &(0..256));
            (data, format!("{}: {what}", names[which]))
        },
        |bytes| load_image_from_memory(bytes, "mutant").map(drop),
    );
    tally.check("images", 3000);
}

#[test]
fn model_dir_mutants_are_refused_or_described() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("models/tiny-pro");
    let files = [
        "config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "processor_config.json",
    ];
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if !files.iter().any(|f| **f == *name) {
            std::os::unix::fs::symlink(entry.path(), tmp.path().join(&name)).unwrap();
        }
    }
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| read(&format!("models/tiny-pro/{f}")))
        .collect();
    let which = std::cell::Cell::new(0);
    let tally = fuzz(
        "model dir (janus info)",
        8,
        300,
        |rng| {
            which.set(rng.below(files.len()));
            let (bytes, what) = mutate_json_bytes(rng, &originals[which.get()]);
            (bytes, format!("{}: {what}", files[which.get()]))
        },
        |bytes| {
            for (f, original) in files.iter().zip(&originals) {
                put(tmp.path(), f, original);
            }
            put(tmp.path(), files[which.get()], bytes);
            ModelInfo::from_dir(tmp.path()).map(drop)
        },
    );
    tally.check("model dir (janus info)", 300);
}

// ---------------------------------------------------------------------------------------
// Regressions: the mutants that once crashed, as exact bytes

/// `config.json` of tiny-pro with `edit` applied, written to `dir`.
fn edited_config(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut v: Value = serde_json::from_slice(&read("models/tiny-pro/config.json")).unwrap();
    edit(&mut v);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    path
}

#[test]
fn configs_with_overflowing_sizes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Each once panicked: divide by zero in grid(), ch * ch_mult and gen_grid^2 overflows.
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 3] = [
        ("patch_size 0", |v| {
            v["vision_config"]["patch_size"] = 0.into()
        }),
        ("ch_mult u64::MAX", |v| {
            v["vq_config"]["channel_multiplier"][0] = u64::MAX.into()
        }),
        ("image_size 2^40", |v| {
            v["vision_config"]["image_size"] = (1u64 << 40).into()
        }),
    ];
    for (what, edit) in edits {
        let path = edited_config(tmp.path(), edit);
        match JanusConfig::from_file(&path) {
            Err(janus::Error::Config(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn tokenizer_that_panics_inside_tokenizers_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A NUL inside the decoder section: tokenizers unwraps its parse error.
    let mut bytes = read("models/tiny-pro/tokenizer.json");
    bytes[4641] = 0x00;
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, &bytes).unwrap();
    // The panic is caught inside the loader; keep the hook quiet about it.
    quiet_panics();
    IN_MUTANT.with(|m| m.set(true));
    let loaded = JanusTokenizer::from_file(&path);
    IN_MUTANT.with(|m| m.set(false));
    match loaded {
        Err(janus::Error::Tokenizer(msg)) => assert!(msg.contains("tokenizer.json"), "{msg}"),
        other => panic!("expected a tokenizer error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn pickle_claiming_a_huge_shape_is_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    // One bf16 tensor whose pickle says shape (2^31 - 1,): 4 GiB in an 838-byte file.
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/huge_shape.bin"))
            .unwrap();
    put(tmp.path(), "pytorch_model.bin", &bytes);
    match TensorStore::open(tmp.path()) {
        Err(janus::Error::Weights { msg, .. }) => assert!(msg.contains("claims shape"), "{msg}"),
        other => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn info_on_a_config_asking_for_huge_tensors_reports_instead_of_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("models/tiny-pro")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::os::unix::fs::symlink(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    // The shape-only build once reshaped a placeholder of (2^40, 3, p, p) and aborted.
    edited_config(tmp.path(), |v| {
        v["vision_config"]["hidden_size"] = (1u64 << 40).into()
    });
    let info = ModelInfo::from_dir(tmp.path()).unwrap();
    assert!(
        info.problems
            .iter()
            .any(|p| p.message.contains("larger than any tensor")),
        "{:?}",
        info.problems
    );
}

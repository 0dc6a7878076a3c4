//! Every ```` ```toml ```` block in the documentation passes `wasmgate check`, run by the real
//! gateway binary with the real plugins in its plugin directory.
//!
//! The documents: `README.md`, `bench/README.md`, `docs/**/*.md` and `plugins/**/README.md`.
//! (The bundled Rust plugins' own unit tests also validate the stage configs of their READMEs
//! natively, through `plugins/readme_examples.rs`; this test covers every document, end to end.)
//!
//! # The rule
//!
//! How a block is checked is set by an HTML comment (invisible on the rendered page) on the line
//! right before its opening fence:
//!
//! - no marker: the block is a complete config and must pass as written;
//! - `<!-- check: fragment -->`: the block is part of a config. It is completed by these steps,
//!   and nothing else:
//!   1. a block whose first non-comment character is `{` is one or more stage tables, and is
//!      wrapped in `stages = [ … ]`;
//!   2. if the block then has top-level keys that are not config sections (`server`, `plugins`,
//!      `limits`, `admin`, `upstreams`, `routes`, `state`), they are a route's keys (`stages = [ … ]`,
//!      say): a `[[routes]]` header is put before the block, with `name = "example"`,
//!      `prefix = "/"` and `upstream = "example"` for whichever of them the block does not set
//!      (no `upstream` when the last stage has `upstreams`: an aggregate stage answers);
//!   3. every upstream that a route (`upstream`) or a stage (`upstreams`) names and the block
//!      does not define is added as `[upstreams.NAME]` with `targets = ["127.0.0.1:9"]`.
//!
//!   So a `[[routes]]` entry in a fragment must be a whole route (`name`, `path` or `prefix`,
//!   and `upstream` unless an aggregate stage answers): only its upstreams are supplied;
//! - `<!-- check: skip (REASON) -->`: the block is not checked; the reason is required.
//!
//! A marker that is not right before a ```` ```toml ```` fence, or that says anything else, is an
//! error.
//!
//! In every block, `[plugins] dir` and `cache-dir` are replaced (a `[plugins]` table is added
//! if there is none), since they depend on where the file lives: `dir` becomes the check's own
//! `plugins/`, which holds exactly the plugins the block's stages name, and `cache-dir` a
//! compiled-artifact cache under the cargo target dir that `tests/polyglot.rs` shares, so that
//! each component compiles once. Everything else is checked as written.
//!
//! # The plugins
//!
//! A bundled Rust plugin comes from `wasmgate-fixtures`, which builds `plugins/` from source.
//! Any other plugin must have been built into `plugins/NAME.wasm` by
//! `scripts/build-polyglot.sh`; a missing one fails the example with that command, as in
//! `tests/polyglot.rs` (nothing is skipped). The examples are checked by two tests: those
//! whose stages use only bundled Rust plugins, and those that use at least one other plugin.
//! The second compiles the big components (up to 18 MB) into the cache first, with a
//! generous time limit, because each example's check is limited to a minute.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, WASMGATE, check_as};

/// The upstream target given to the upstreams a fragment names but does not define
/// (`wasmgate check` never connects to it).
const FRAGMENT_TARGET: &str = "127.0.0.1:9";

/// The top-level tables of a config; any other top-level key of a fragment is a route's.
const SECTIONS: [&str; 7] = [
    "server",
    "plugins",
    "limits",
    "admin",
    "upstreams",
    "routes",
    "state",
];

/// How long the warm-up may take to compile the non-Rust plugins into the cache.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The compiled-artifact cache (the one `tests/polyglot.rs` uses).
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")
}

/// `text` as a TOML basic string (JSON's string syntax is a subset of it).
fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

// === Finding the blocks ===

/// The documents whose examples are checked, relative to the repository root, sorted.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("bench/README.md")];
    markdown_under(&root, Path::new("docs"), &mut files, &|_| true);
    markdown_under(&root, Path::new("plugins"), &mut files, &|name| {
        name == "README.md"
    });
    files.retain(|file| root.join(file).is_file());
    files.sort();
    files.dedup();
    files
}

/// Adds the `.md` files under `root/dir` whose name passes `keep` (as paths relative to
/// `root`), skipping build output (`target`, `node_modules`) and hidden directories.
fn markdown_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>, keep: &dyn Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("reading a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        let file_type = entry.file_type().expect("a directory entry's type");
        if file_type.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                markdown_under(root, &path, out, keep);
            }
        } else if name.ends_with(".md") && keep(&name) {
            out.push(path);
        }
    }
}

/// How a block is checked (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    Config,
    Fragment,
    Skip(String),
}

/// One ```` ```toml ```` block.
#[derive(Debug)]
struct Block {
    /// The document, relative to the repository root.
    file: String,
    /// The 1-based line of the opening fence.
    line: usize,
    marker: Marker,
    /// The lines between the fences, with the fence's indentation removed.
    text: String,
}

impl Block {
    fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// An open fenced code block.
struct Fence {
    ch: char,
    len: usize,
    indent: usize,
    /// Set for a `toml` fence: its 1-based line, marker and lines so far.
    toml: Option<(usize, Marker, Vec<String>)>,
}

/// Reads a fence opening: its character, length, indentation and info string.
fn fence_opening(line: &str) -> Option<(char, usize, usize, &str)> {
    let trimmed = line.trim_start();
    let ch = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|c| *c == ch).count();
    let info = trimmed[len..].trim();
    if len < 3 || (ch == '`' && info.contains('`')) {
        return None;
    }
    Some((ch, len, line.len() - trimmed.len(), info))
}

/// Reads a `<!-- check: … -->` line: `None` if the line is not one.
fn marker_of(line: &str) -> Option<Result<Marker, String>> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim()
        .strip_prefix("check:")?
        .trim();
    Some(if inner == "fragment" {
        Ok(Marker::Fragment)
    } else if let Some(reason) = inner.strip_prefix("skip") {
        let reason = reason
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        if reason.is_empty() {
            Err("`<!-- check: skip (REASON) -->` needs a reason".to_string())
        } else {
            Ok(Marker::Skip(reason.to_string()))
        }
    } else {
        Err(format!(
            "unknown marker `{}`: use `<!-- check: fragment -->` or `<!-- check: skip (REASON) -->`",
            line.trim()
        ))
    })
}

/// The ```` ```toml ```` blocks of `source` (the document `file`), and the problems found on the
/// way: bad or stray markers, an unclosed fence.
fn toml_blocks(file: &str, source: &str) -> (Vec<Block>, Vec<String>) {
    let (mut blocks, mut problems) = (Vec::new(), Vec::new());
    let mut open: Option<Fence> = None;
    // A marker line seen on the previous line, by its 1-based line.
    let mut marker: Option<(usize, Result<Marker, String>)> = None;
    for (index, line) in source.lines().enumerate() {
        let number = index + 1;
        if let Some(fence) = open.as_mut() {
            let trimmed = line.trim();
            let closes = trimmed.len() >= fence.len && trimmed.chars().all(|c| c == fence.ch);
            if !closes {
                if let Some((_, _, lines)) = &mut fence.toml {
                    let spaces = line.len() - line.trim_start_matches(' ').len();
                    lines.push(line[spaces.min(fence.indent)..].to_string());
                }
                continue;
            }
            if let Some((start, marker, lines)) = open.take().and_then(|fence| fence.toml) {
                let mut text = lines.join("\n");
                text.push('\n');
                blocks.push(Block {
                    file: file.to_string(),
                    line: start,
                    marker,
                    text,
                });
            }
            continue;
        }
        let pending = marker.take();
        if let Some((ch, len, indent, info)) = fence_opening(line) {
            let is_toml = info.split_whitespace().next() == Some("toml");
            let toml = match pending {
                Some((at, Err(problem))) => {
                    problems.push(format!("{file}:{at}: {problem}"));
                    None
                }
                Some((at, Ok(_))) if !is_toml => {
                    problems.push(format!(
                        "{file}:{at}: a `<!-- check: … -->` marker must be right before a ```toml fence"
                    ));
                    None
                }
                Some((_, Ok(marker))) => Some(marker),
                None => is_toml.then_some(Marker::Config),
            };
            open = Some(Fence {
                ch,
                len,
                indent,
                toml: toml.map(|marker| (number, marker, Vec::new())),
            });
            continue;
        }
        if let Some((at, _)) = pending {
            problems.push(format!(
                "{file}:{at}: a `<!-- check: … -->` marker must be right before a ```toml fence"
            ));
        }
        marker = marker_of(line).map(|parsed| (number, parsed));
    }
    if let Some((at, _)) = marker {
        problems.push(format!(
            "{file}:{at}: a `<!-- check: … -->` marker must be right before a ```toml fence"
        ));
    }
    if let Some(Fence {
        toml: Some((start, _, _)),
        ..
    }) = open
    {
        problems.push(format!("{file}:{start}: the ```toml fence is never closed"));
    }
    (blocks, problems)
}

// === Completing and adjusting a block ===

/// The routes of a parsed config.
fn routes(document: &toml::Table) -> impl Iterator<Item = &toml::Table> {
    document
        .get("routes")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
}

/// The stages of a parsed route.
fn stages(route: &toml::Table) -> impl Iterator<Item = &toml::Table> {
    route
        .get("stages")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
}

fn parse(text: &str) -> Result<toml::Table, String> {
    toml::from_str(text).map_err(|error| format!("not valid TOML: {error}"))
}

/// Completes a fragment into a config by the steps in the module docs.
fn complete_fragment(block: &str) -> Result<String, String> {
    let first = block
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'));
    let mut text = if first.is_some_and(|line| line.starts_with('{')) {
        format!("stages = [\n{block}]\n")
    } else {
        block.to_string()
    };
    let document = parse(&text)?;
    if document.keys().any(|key| !SECTIONS.contains(&key.as_str())) {
        let mut head = String::from("[[routes]]\n");
        if !document.contains_key("name") {
            head.push_str("name = \"example\"\n");
        }
        if !document.contains_key("path") && !document.contains_key("prefix") {
            head.push_str("prefix = \"/\"\n");
        }
        let aggregates = stages(&document)
            .last()
            .is_some_and(|stage| stage.contains_key("upstreams"));
        if !document.contains_key("upstream") && !aggregates {
            head.push_str("upstream = \"example\"\n");
        }
        text = head + &text;
    }
    let document = parse(&text)?;
    let defined = document.get("upstreams").and_then(toml::Value::as_table);
    let mut named: Vec<&str> = Vec::new();
    for route in routes(&document) {
        named.extend(route.get("upstream").and_then(toml::Value::as_str));
        for stage in stages(route) {
            let upstreams = stage.get("upstreams").and_then(toml::Value::as_array);
            named.extend(
                upstreams
                    .into_iter()
                    .flatten()
                    .filter_map(toml::Value::as_str),
            );
        }
    }
    let mut added: Vec<&str> = Vec::new();
    for name in named {
        if defined.is_some_and(|table| table.contains_key(name)) || added.contains(&name) {
            continue;
        }
        text.push_str(&format!(
            "\n[upstreams.{}]\ntargets = [{}]\n",
            quote(name),
            quote(FRAGMENT_TARGET)
        ));
        added.push(name);
    }
    Ok(text)
}

/// The table a `[name]` or `[[name]]` header line opens, if the line is one.
fn table_header(line: &str) -> Option<&str> {
    let line = line.trim();
    let (name, rest) = match line.strip_prefix("[[") {
        Some(rest) => rest.split_once("]]")?,
        None => line.strip_prefix('[')?.split_once(']')?,
    };
    let rest = rest.trim();
    (rest.is_empty() || rest.starts_with('#')).then(|| name.trim())
}

/// Whether `line` sets `key`.
fn sets_key(line: &str, key: &str) -> bool {
    line.trim_start()
        .strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// `text` with `[plugins] dir` and `cache-dir` pointing at the check's `plugins/` and at
/// `cache`: the lines setting them in the `[plugins]` table are replaced, or a `[plugins]`
/// table is put first.
fn with_plugin_paths(text: &str, cache: &Path) -> String {
    let settings = format!(
        "dir = \"plugins\"\ncache-dir = {}",
        quote(&cache.display().to_string())
    );
    let mut out = String::new();
    let mut in_plugins = false;
    let mut replaced = false;
    for line in text.lines() {
        if let Some(table) = table_header(line) {
            in_plugins = table == "plugins" && !replaced;
            if in_plugins {
                out.push_str(line);
                out.push('\n');
                out.push_str(&settings);
                out.push('\n');
                replaced = true;
                continue;
            }
        }
        if in_plugins && (sets_key(line, "dir") || sets_key(line, "cache-dir")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if replaced {
        out
    } else {
        format!("[plugins]\n{settings}\n\n{out}")
    }
}

/// A block made ready for `wasmgate check`.
struct Prepared {
    /// The config to check.
    config: String,
    /// The plugins its stages name, each once, in order.
    plugins: Vec<String>,
}

fn prepare(block: &Block, cache: &Path) -> Result<Prepared, String> {
    let text = match block.marker {
        Marker::Fragment => complete_fragment(&block.text)?,
        Marker::Config | Marker::Skip(_) => block.text.clone(),
    };
    let document = parse(&text)?;
    let mut plugins: Vec<String> = Vec::new();
    for route in routes(&document) {
        for stage in stages(route) {
            if let Some(name) = stage.get("plugin").and_then(toml::Value::as_str)
                && !plugins.iter().any(|known| known == name)
            {
                plugins.push(name.to_string());
            }
        }
    }
    Ok(Prepared {
        config: with_plugin_paths(&text, cache),
        plugins,
    })
}

// === Plugins ===

/// The component of bundled Rust plugin `name`, built by `wasmgate-fixtures`.
fn bundled_rust_plugin(name: &str) -> Option<&'static str> {
    wasmgate_fixtures::ALL
        .iter()
        .find(|(crate_name, _)| !crate_name.starts_with("fx-") && *crate_name == name)
        .map(|(_, path)| *path)
}

/// The component of plugin `name`: a bundled Rust plugin, else `plugins/NAME.wasm`.
fn plugin_file(name: &str) -> Result<PathBuf, String> {
    if let Some(path) = bundled_rust_plugin(name) {
        return Ok(PathBuf::from(path));
    }
    let built = repo().join("plugins").join(format!("{name}.wasm"));
    if built.is_file() {
        Ok(built)
    } else {
        Err(format!(
            "plugin `{name}` is not a bundled Rust plugin and plugins/{name}.wasm is missing"
        ))
    }
}

/// Compiles `plugins` into `cache` with one `wasmgate check` allowed [`WARM_UP_TIMEOUT`]
/// (it loads every plugin in its directory), so that no example's check, limited to a minute,
/// has to compile a large component. Its outcome is not judged: the examples' checks are.
fn warm_cache(plugins: &BTreeMap<String, PathBuf>, cache: &Path) {
    if plugins.is_empty() {
        return;
    }
    let dir = TempDir::new();
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("creating the plugin dir");
    for (name, path) in plugins {
        std::fs::copy(path, plugin_dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copying plugin {name} from {}: {e}", path.display()));
    }
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"plugins\"\ncache-dir = {}\n",
            quote(&cache.display().to_string())
        ),
    )
    .expect("writing the warm-up config");
    let mut child = Command::new(WASMGATE)
        .args(["check", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning wasmgate check");
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    while child.try_wait().expect("polling wasmgate check").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// === Checking ===

/// `text` with 1-based line numbers, for failure messages.
fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(index, line)| format!("  {:>3} | {line}\n", index + 1))
        .collect()
}

/// Runs `wasmgate check` on a prepared block with `plugins` in its plugin dir.
fn check_block(
    block: &Block,
    prepared: &Prepared,
    plugins: &[(String, PathBuf)],
) -> Result<(), String> {
    let plugins: Vec<(&str, &Path)> = plugins
        .iter()
        .map(|(name, path)| (name.as_str(), path.as_path()))
        .collect();
    let kind = match block.marker {
        Marker::Fragment => "fragment, completed",
        Marker::Config | Marker::Skip(_) => "complete config",
    };
    let hint = if block.marker == Marker::Config {
        "\n  (if the block is only part of a config, put `<!-- check: fragment -->` on the line \
         before its fence; see the rule at the top of tests/docs_examples.rs)"
    } else {
        ""
    };
    let output =
        match std::panic::catch_unwind(|| check_as("gateway.toml", &prepared.config, &plugins)) {
            Ok(output) => output,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                return Err(format!(
                    "{}: `wasmgate check` did not finish: {why}\n  checked ({kind}):\n{}",
                    block.location(),
                    numbered(&prepared.config)
                ));
            }
        };
    if output.code == Some(0) {
        return Ok(());
    }
    let path = output.path.display().to_string();
    let printed = format!("{}{}", output.stdout, output.stderr).replace(&path, "gateway.toml");
    Err(format!(
        "{}: the ```toml block fails `wasmgate check` (exit status {}):\n{}\n  checked ({kind}; \
         plugins: [{}]):\n{}{hint}",
        block.location(),
        output
            .code
            .map_or_else(|| "none: killed".to_string(), |code| code.to_string()),
        printed.trim_end(),
        prepared.plugins.join(", "),
        numbered(&prepared.config)
    ))
}

/// A block to check, with the components of the plugins its stages name.
struct Example {
    block: Block,
    prepared: Prepared,
    plugins: Vec<(String, PathBuf)>,
}

/// Which examples a test checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Examples whose stages use only bundled Rust plugins (or none). This test also reports
    /// the problems that concern every block: markers, fences, invalid TOML.
    RustPlugins,
    /// Examples with at least one stage of another plugin (`plugins/NAME.wasm`).
    OtherPlugins,
}

fn check_examples(group: Group) {
    let cache = cache_dir();
    let root = repo();
    let mut failures: Vec<String> = Vec::new();
    let mut examples: Vec<Example> = Vec::new();
    let mut blocks_found = 0;
    let mut missing_plugins = false;
    for file in documents() {
        let source = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let name = file.to_string_lossy().replace('\\', "/");
        let (blocks, problems) = toml_blocks(&name, &source);
        blocks_found += blocks.len();
        if group == Group::RustPlugins {
            failures.extend(problems);
        }
        for block in blocks {
            if let Marker::Skip(reason) = &block.marker {
                if group == Group::RustPlugins {
                    eprintln!("{}: skipped ({reason})", block.location());
                }
                continue;
            }
            let prepared = match prepare(&block, &cache) {
                Ok(prepared) => prepared,
                Err(why) => {
                    if group == Group::RustPlugins {
                        failures.push(format!(
                            "{}: {why}\n  the block:\n{}",
                            block.location(),
                            numbered(&block.text)
                        ));
                    }
                    continue;
                }
            };
            let needs_other = prepared
                .plugins
                .iter()
                .any(|name| bundled_rust_plugin(name).is_none());
            if needs_other != (group == Group::OtherPlugins) {
                continue;
            }
            let files: Result<Vec<(String, PathBuf)>, String> = prepared
                .plugins
                .iter()
                .map(|name| plugin_file(name).map(|path| (name.clone(), path)))
                .collect();
            match files {
                Ok(plugins) => examples.push(Example {
                    block,
                    prepared,
                    plugins,
                }),
                Err(why) => {
                    failures.push(format!("{}: {why}", block.location()));
                    missing_plugins = true;
                }
            }
        }
    }
    if group == Group::RustPlugins {
        assert!(
            blocks_found > 0 && !examples.is_empty(),
            "found no ```toml block to check in {}: is the extraction broken?",
            root.display()
        );
    }
    let big: BTreeMap<String, PathBuf> = examples
        .iter()
        .flat_map(|example| &example.plugins)
        .filter(|(name, _)| bundled_rust_plugin(name).is_none())
        .cloned()
        .collect();
    warm_cache(&big, &cache);
    for Example {
        block,
        prepared,
        plugins,
    } in &examples
    {
        if let Err(failure) = check_block(block, prepared, plugins) {
            failures.push(failure);
        }
    }
    if missing_plugins {
        failures.push(
            "Build the non-Rust plugins first with `scripts/build-polyglot.sh` (it installs \
             their toolchains from PyPI, npm and crates.io into ~/.cache/wasmgate-tools)."
                .to_string(),
        );
    }
    assert!(
        failures.is_empty(),
        "the documentation's TOML examples fail (the rule is at the top of \
         tests/docs_examples.rs):\n\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn examples_with_rust_plugins_pass_check() {
    check_examples(Group::RustPlugins);
}

#[test]
fn examples_with_non_rust_plugins_pass_check() {
    check_examples(Group::OtherPlugins);
}

//! Compiles a route's `.proto` files at load, with no `protoc`: protox parses and checks
//! them, and a problem is reported at its file, line and column.
//!
//! Imports resolve from the route's include directories first, then from the gateway's own
//! minimal `google/api/{http,annotations}.proto` and `google/rpc/{status,error_details}.proto`
//! (so a user's copy on the include path wins), then from protox's well-known types.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use miette::Diagnostic as _;
use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

/// The files the gateway brings, by import name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "google/api/http.proto",
        include_str!("protos/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("protos/google/api/annotations.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("protos/google/rpc/status.proto"),
    ),
    (
        "google/rpc/error_details.proto",
        include_str!("protos/google/rpc/error_details.proto"),
    ),
];

/// Files always compiled along with a route's own: the HTTP option (so a file that does
/// not import it is reported as unannotated), and the status and its details (so they render).
const ALWAYS: &[&str] = &[
    "google/api/annotations.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

/// A `.proto` problem, located when protox says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.headline())]
pub struct ProtoError {
    /// The file, when known (a path on disk, or an import name for an embedded file).
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
    /// The offending source line with a caret under the problem, when known.
    pub snippet: String,
}

impl ProtoError {
    fn headline(&self) -> String {
        match (&self.file, self.position) {
            (Some(file), Some((line, column))) => {
                format!("{}:{line}:{column}: {}", file.display(), self.message)
            }
            (Some(file), None) => format!("{}: {}", file.display(), self.message),
            _ => self.message.clone(),
        }
    }
}

/// Compiles `files` (paths on disk) with imports from `include` (directories); each file's
/// own directory is searched after the include directories.
pub fn compile(files: &[PathBuf], include: &[PathBuf]) -> Result<DescriptorPool, ProtoError> {
    let mut dirs: Vec<PathBuf> = include.to_vec();
    for file in files {
        let parent = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        if !dirs.iter().any(|dir| file.starts_with(dir)) && !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    let seen: Seen = Rc::default();
    let mut chain = ChainFileResolver::new();
    for dir in &dirs {
        chain.add(IncludeFileResolver::new(dir.clone()));
    }
    chain.add(Embedded);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(Recording {
        inner: chain,
        seen: seen.clone(),
    });
    compiler.include_imports(true);
    for file in files {
        if let Err(error) = std::fs::metadata(file) {
            return Err(ProtoError {
                file: Some(file.clone()),
                position: None,
                message: format!("cannot read: {error}"),
                snippet: String::new(),
            });
        }
        compiler
            .open_file(file)
            .map_err(|error| locate(&error, &seen, &dirs))?;
    }
    for name in ALWAYS {
        compiler
            .open_file(name)
            .map_err(|error| locate(&error, &seen, &dirs))?;
    }
    Ok(compiler.descriptor_pool())
}

/// The sources opened so far, by import name: where each came from and its text.
type Seen = Rc<RefCell<HashMap<String, (Option<PathBuf>, String)>>>;

/// A resolver that remembers what it opened, so errors can quote the source.
struct Recording {
    inner: ChainFileResolver,
    seen: Seen,
}

impl FileResolver for Recording {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.inner.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let file = self.inner.open_file(name)?;
        if let Some(source) = file.source() {
            self.seen.borrow_mut().insert(
                name.to_string(),
                (file.path().map(Path::to_path_buf), source.to_string()),
            );
        }
        Ok(file)
    }
}

/// The gateway's own copies of the Google API files.
struct Embedded;

impl FileResolver for Embedded {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match EMBEDDED.iter().find(|(embedded, _)| *embedded == name) {
            Some((_, source)) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Turns a protox error into a [`ProtoError`] at the file, line and column it names.
fn locate(error: &protox::Error, seen: &Seen, dirs: &[PathBuf]) -> ProtoError {
    let message = match error.help() {
        Some(help) => format!("{error} ({help})"),
        None => error.to_string(),
    };
    let Some(name) = error.file() else {
        return ProtoError {
            file: None,
            position: None,
            message,
            snippet: String::new(),
        };
    };
    let seen = seen.borrow();
    // Files named on the command line are opened by protox itself: read them back.
    let on_disk = || {
        dirs.iter().map(|dir| dir.join(name)).find_map(|path| {
            let source = std::fs::read_to_string(&path).ok()?;
            Some((Some(path), source))
        })
    };
    let (path, source) = match seen.get(name).cloned().or_else(on_disk) {
        Some((path, source)) => (path, Some(source)),
        None => (None, None),
    };
    let source = source.as_deref();
    let file = Some(path.unwrap_or_else(|| PathBuf::from(name)));
    let label = error.labels().and_then(|mut labels| labels.next());
    match (label, source) {
        (Some(label), Some(source)) => {
            let (position, snippet) = position_in(source, label.offset(), label.len());
            ProtoError {
                file,
                position: Some(position),
                message,
                snippet,
            }
        }
        _ => ProtoError {
            file,
            position: None,
            message,
            snippet: String::new(),
        },
    }
}

/// The 1-based line and column of byte `offset` in `source`, and that line with a caret
/// under `len` bytes (in the config errors' style).
pub fn position_in(source: &str, offset: usize, len: usize) -> ((usize, usize), String) {
    let start = floor_char_boundary(source, offset.min(source.len()));
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line = source[..start].matches('\n').count() + 1;
    let column = source[line_start..start].chars().count() + 1;
    let end = floor_char_boundary(source, (start + len).clamp(start, line_end));
    let width = source[start..end].chars().count().max(1);
    let text = crate::text::escape_control(source[line_start..line_end].trim_end_matches('\r'));
    let gutter = " ".repeat(line.to_string().len());
    let snippet = format!(
        "{gutter} |\n{line} | {text}\n{gutter} | {}{}",
        " ".repeat(column - 1),
        "^".repeat(width)
    );
    ((line, column), snippet)
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a proto");
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wasmgate-protos-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        dir
    }

    #[test]
    fn annotations_resolve_from_the_embedded_copies() {
        let dir = temp_dir("ok");
        let file = write(
            &dir,
            "a.proto",
            "syntax = \"proto3\";\npackage t;\nimport \"google/api/annotations.proto\";\nmessage M { string name = 1; }\nservice S { rpc Get(M) returns (M) { option (google.api.http) = { get: \"/v1/{name}\" }; } }\n",
        );
        let pool = compile(&[file], &[]);
        std::fs::remove_dir_all(&dir).ok();
        let pool = pool.expect("compiles");
        assert!(pool.get_service_by_name("t.S").is_some());
        assert!(pool.get_message_by_name("google.rpc.BadRequest").is_some());
        assert!(pool.get_extension_by_name("google.api.http").is_some());
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let dir = temp_dir("bad");
        let file = write(
            &dir,
            "b.proto",
            "syntax = \"proto3\";\npackage t;\nmessage M {\n  string name = 1\n}\n",
        );
        let error = compile(std::slice::from_ref(&file), &[]);
        std::fs::remove_dir_all(&dir).ok();
        let error = error.expect_err("a syntax error");
        assert_eq!(error.file.as_deref(), Some(file.as_path()));
        let (line, _) = error.position.expect("a position");
        assert!(line == 4 || line == 5, "{error:?}");
        assert!(error.snippet.contains('^'), "{error:?}");
    }

    #[test]
    fn an_unknown_type_names_its_line() {
        let dir = temp_dir("type");
        let file = write(
            &dir,
            "c.proto",
            "syntax = \"proto3\";\npackage t;\nmessage M {\n  Missing name = 1;\n}\n",
        );
        let error = compile(std::slice::from_ref(&file), &[]);
        std::fs::remove_dir_all(&dir).ok();
        let error = error.expect_err("an unknown type");
        assert_eq!(error.position.map(|p| p.0), Some(4), "{error:?}");
        assert!(error.message.contains("Missing"), "{error:?}");
    }
}

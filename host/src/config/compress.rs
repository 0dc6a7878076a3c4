//! A route's `compress` key: which content codings the gateway offers, at which levels, and
//! which responses are worth compressing. The stage that acts on it is
//! [`crate::pipeline::compress`].

use std::fmt;

use toml::Spanned;

use super::Checker;
use super::raw::{RawCompress, RawCompressTable};

/// Codings offered when `encodings` is left out, in order of preference.
pub const DEFAULT_ENCODINGS: [ContentCoding; 3] = [
    ContentCoding::Brotli,
    ContentCoding::Zstd,
    ContentCoding::Gzip,
];
/// gzip level when none is set: what `gzip_comp_level 6` gives nginx, and zlib's own default.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// Brotli level when none is set: quick enough to run on every response, smaller than gzip 6.
pub const DEFAULT_BROTLI_LEVEL: u32 = 4;
/// zstd level when none is set: zstd's own default.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Bodies known to be smaller than this are not compressed, by default.
pub const DEFAULT_MIN_BYTES: u64 = 1 << 10;
/// Media types compressed by default: text, and the structured or code formats that are text
/// under another name. Images (but SVG), audio, video, fonts and archives are already
/// compressed or do not shrink.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "image/svg+xml",
];

/// A content coding the gateway can apply to responses and remove from request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentCoding {
    /// `br` (RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
    /// `gzip` (RFC 1952; `x-gzip` is the same coding).
    Gzip,
}

impl ContentCoding {
    /// Every coding, in the gateway's default order of preference.
    pub const ALL: [ContentCoding; 3] = DEFAULT_ENCODINGS;

    /// The coding's token in `Content-Encoding` and `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    /// The coding a token names (case-insensitive), if the gateway knows it.
    pub fn from_token(token: &str) -> Option<Self> {
        match token.to_ascii_lowercase().as_str() {
            "br" => Some(Self::Brotli),
            "zstd" => Some(Self::Zstd),
            "gzip" | "x-gzip" => Some(Self::Gzip),
            _ => None,
        }
    }
}

impl fmt::Display for ContentCoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Compression level per coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressLevels {
    /// gzip, 1 to 9.
    pub gzip: u32,
    /// Brotli, 0 to 11.
    pub br: u32,
    /// zstd, 1 to 19.
    pub zstd: i32,
}

impl Default for CompressLevels {
    fn default() -> Self {
        Self {
            gzip: DEFAULT_GZIP_LEVEL,
            br: DEFAULT_BROTLI_LEVEL,
            zstd: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// A media range of `compress.types`: `type/subtype`, `type/*`, `type/*+suffix` or `*/*`,
/// lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    kind: String,
    subtype: String,
}

impl MediaRange {
    /// Parses a media range; parameters are not allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let valid = lower.split_once('/').filter(|(kind, subtype)| {
            let subtype_ok = match subtype.strip_prefix('*') {
                Some("") => true,
                Some(suffix) => suffix.starts_with('+') && token(&suffix[1..]),
                None => token(subtype),
            };
            ((*kind == "*" && *subtype == "*") || token(kind)) && subtype_ok
        });
        match valid {
            Some((kind, subtype)) => Ok(Self {
                kind: kind.to_string(),
                subtype: subtype.to_string(),
            }),
            None => Err(format!(
                "`{text}` is not a media type: expected `type/subtype`, `type/*` or `type/*+suffix`"
            )),
        }
    }

    /// Whether a `Content-Type` value (parameters allowed) falls in this range.
    pub fn matches(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        if self.kind == "*" {
            return true;
        }
        if !self.kind.eq_ignore_ascii_case(kind) {
            return false;
        }
        match self.subtype.strip_prefix('*') {
            Some("") => true,
            Some(suffix) => {
                subtype.len() > suffix.len()
                    && subtype.is_char_boundary(subtype.len() - suffix.len())
                    && subtype[subtype.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
            None => self.subtype.eq_ignore_ascii_case(subtype),
        }
    }
}

impl fmt::Display for MediaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.subtype)
    }
}

/// A route's response compression, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressConfig {
    /// Codings offered, in order of preference (which wins when a client weighs several
    /// the same).
    pub encodings: Vec<ContentCoding>,
    /// Level per coding.
    pub levels: CompressLevels,
    /// Bodies known to be smaller than this are sent as they are.
    pub min_bytes: u64,
    /// Media types worth compressing.
    pub types: Vec<MediaRange>,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            encodings: DEFAULT_ENCODINGS.to_vec(),
            levels: CompressLevels::default(),
            min_bytes: DEFAULT_MIN_BYTES,
            types: DEFAULT_TYPES
                .iter()
                .map(|text| MediaRange::parse(text).expect("the defaults are valid"))
                .collect(),
        }
    }
}

impl CompressConfig {
    /// Whether responses of `content_type` are worth compressing.
    pub fn compresses_type(&self, content_type: &str) -> bool {
        self.types.iter().any(|range| range.matches(content_type))
    }
}

impl Checker<'_, '_> {
    /// Checks a route's `compress` (`key` is `routes[N].compress`); `None` when it is off or
    /// wrong.
    pub(super) fn compress(
        &mut self,
        key: &str,
        spanned: &Spanned<RawCompress>,
    ) -> Option<CompressConfig> {
        let table = match spanned.get_ref() {
            RawCompress::Enabled(false) => return None,
            RawCompress::Enabled(true) => return Some(CompressConfig::default()),
            RawCompress::Table(table) => table,
        };
        let RawCompressTable {
            encodings,
            level,
            min_bytes,
            types,
        } = table;
        let mut config = CompressConfig::default();
        let mut clean = true;
        if let Some(list) = encodings {
            if list.get_ref().is_empty() {
                self.report.error(
                    list.span(),
                    format!("{key}.encodings"),
                    "needs at least one coding; remove `compress` to turn compression off",
                );
                clean = false;
            }
            config.encodings.clear();
            for token in list.get_ref() {
                match ContentCoding::from_token(token.get_ref()) {
                    Some(coding) if config.encodings.contains(&coding) => {
                        self.report.error(
                            token.span(),
                            format!("{key}.encodings"),
                            format!("`{coding}` is listed twice"),
                        );
                        clean = false;
                    }
                    Some(coding) => config.encodings.push(coding),
                    None => {
                        self.report.error(
                            token.span(),
                            format!("{key}.encodings"),
                            format!(
                                "unknown coding `{}`: expected `br`, `zstd` or `gzip`",
                                token.get_ref()
                            ),
                        );
                        clean = false;
                    }
                }
            }
        }
        if let Some(levels) = level {
            let mut level_of = |value: &Option<Spanned<i64>>, coding: &str, range: (i64, i64)| {
                let value = value.as_ref()?;
                let level = *value.get_ref();
                if level < range.0 || level > range.1 {
                    self.report.error(
                        value.span(),
                        format!("{key}.level.{coding}"),
                        format!(
                            "{level} is not a {coding} level: expected {} to {}",
                            range.0, range.1
                        ),
                    );
                    clean = false;
                    return None;
                }
                Some(level)
            };
            if let Some(gzip) = level_of(&levels.gzip, "gzip", (1, 9)) {
                config.levels.gzip = gzip as u32;
            }
            if let Some(br) = level_of(&levels.br, "br", (0, 11)) {
                config.levels.br = br as u32;
            }
            if let Some(zstd) = level_of(&levels.zstd, "zstd", (1, 19)) {
                config.levels.zstd = zstd as i32;
            }
        }
        if let Some(min_bytes) = min_bytes {
            config.min_bytes = min_bytes.0;
        }
        if let Some(list) = types {
            if list.get_ref().is_empty() {
                self.report.error(
                    list.span(),
                    format!("{key}.types"),
                    "needs at least one media type; remove `compress` to turn compression off",
                );
                clean = false;
            }
            config.types.clear();
            for text in list.get_ref() {
                match MediaRange::parse(text.get_ref()) {
                    Ok(range) => config.types.push(range),
                    Err(message) => {
                        self.report
                            .error(text.span(), format!("{key}.types"), message);
                        clean = false;
                    }
                }
            }
        }
        clean.then_some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> MediaRange {
        MediaRange::parse(text).unwrap()
    }

    #[test]
    fn media_ranges_match_types_with_parameters_and_suffixes() {
        assert!(range("text/*").matches("text/html; charset=utf-8"));
        assert!(range("text/*").matches("TEXT/Event-Stream"));
        assert!(!range("text/*").matches("application/json"));
        assert!(range("application/json").matches("application/json;charset=utf-8"));
        assert!(!range("application/json").matches("application/jsonx"));
        assert!(range("application/*+json").matches("application/problem+json"));
        assert!(!range("application/*+json").matches("application/json"));
        assert!(!range("application/*+json").matches("application/+json"));
        assert!(range("*/*").matches("image/png"));
        assert!(!range("text/*").matches("text"));
        assert!(!range("text/*").matches(""));
    }

    #[test]
    fn bad_media_ranges_are_refused() {
        for text in [
            "text",
            "*/json",
            "text/*json",
            "text/ html",
            "/",
            "a/b;c=d",
            "text/*+",
        ] {
            assert!(MediaRange::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_defaults_parse() {
        let config = CompressConfig::default();
        assert_eq!(config.types.len(), DEFAULT_TYPES.len());
        assert!(config.compresses_type("application/javascript"));
        assert!(!config.compresses_type("image/png"));
        assert!(!config.compresses_type("application/octet-stream"));
    }
}

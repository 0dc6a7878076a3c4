//! Key paths (`routes[0].timeout`) of positions in the config text, for diagnostics.

/// The section a key path belongs to: `routes[2]`, `upstreams.users`, `server`, …
pub(super) fn section_of(key_path: &str) -> String {
    let mut parts = key_path.splitn(3, '.');
    let first = parts.next().unwrap_or_default();
    match (first, parts.next()) {
        ("upstreams", Some(name)) => {
            format!("upstreams.{}", name.split('[').next().unwrap_or(name))
        }
        _ => first.to_string(),
    }
}

/// Whether `key_path` is `section` or inside it.
pub(super) fn within(key_path: &str, section: &str) -> bool {
    key_path
        .strip_prefix(section)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The dotted key path (`routes[0].timeout`) of the key or value at byte `offset`.
pub(super) fn key_path_at(source: &str, offset: usize) -> String {
    let Ok(root) = toml::de::DeTable::parse(source) else {
        return String::new();
    };
    let mut path = String::new();
    key_path_in_table(root.get_ref(), offset, &mut path);
    path
}

fn key_path_in_table(table: &toml::de::DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table {
        let (key_span, value_span) = (key.span(), value.span());
        let inside = key_span.contains(&offset)
            || value_span.contains(&offset)
            || (key_span.start <= offset && offset < value_span.end);
        if !inside
            && !matches!(
                value.get_ref(),
                toml::de::DeValue::Array(_) | toml::de::DeValue::Table(_)
            )
        {
            continue;
        }
        let mark = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        match value.get_ref() {
            toml::de::DeValue::Table(inner) if inside || table_contains(inner, offset) => {
                key_path_in_table(inner, offset, path);
                return;
            }
            toml::de::DeValue::Array(items) => {
                if let Some((index, item)) = items.iter().enumerate().find(|(_, item)| {
                    item.span().contains(&offset)
                        || matches!(item.get_ref(), toml::de::DeValue::Table(t) if table_contains(t, offset))
                }) {
                    path.push_str(&format!("[{index}]"));
                    if let toml::de::DeValue::Table(inner) = item.get_ref() {
                        key_path_in_table(inner, offset, path);
                    }
                    return;
                }
                if inside {
                    return;
                }
            }
            _ if inside => return,
            _ => {}
        }
        path.truncate(mark);
    }
}

/// Whether any key or value of `table` (at any depth) spans `offset`.
fn table_contains(table: &toml::de::DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(key, value)| {
        key.span().contains(&offset)
            || value.span().contains(&offset)
            || match value.get_ref() {
                toml::de::DeValue::Table(inner) => table_contains(inner, offset),
                toml::de::DeValue::Array(items) => items
                    .iter()
                    .any(|item| matches!(item.get_ref(), toml::de::DeValue::Table(t) if table_contains(t, offset))),
                _ => false,
            }
    })
}

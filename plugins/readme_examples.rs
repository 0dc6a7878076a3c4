//! Test support shared by the bundled plugins (included with `#[path]` from each plugin's tests):
//! the stage configs of a plugin in its README's TOML examples, so a test can check that every
//! documented example is a valid config.

/// The `config` of every stage of `plugin` in the TOML blocks of `readme`, as JSON. Every TOML
/// block must parse.
pub fn stage_configs(readme: &str, plugin: &str) -> Vec<String> {
    let mut configs = Vec::new();
    for block in readme.split("```toml").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        let document: toml::Table = toml::from_str(block)
            .unwrap_or_else(|err| panic!("a README example does not parse: {err}\n{block}"));
        let routes = document
            .get("routes")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten();
        let lists = document
            .get("stages")
            .into_iter()
            .chain(routes.filter_map(|route| route.get("stages")));
        for stage in lists.filter_map(toml::Value::as_array).flatten() {
            if stage.get("plugin").and_then(toml::Value::as_str) == Some(plugin) {
                let config = stage
                    .get("config")
                    .cloned()
                    .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
                configs.push(serde_json::to_string(&config).expect("TOML values are JSON"));
            }
        }
    }
    configs
}

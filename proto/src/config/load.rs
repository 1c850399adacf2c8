use super::{ConfigErrors, RoutingConfig, validate};
use std::path::Path;

/// Parses and validates a routing config. `file` labels every error (a path, or a name such as
/// `<control-plane>` for pushed snapshots).
pub fn load_str(text: &str, file: &str) -> Result<RoutingConfig, ConfigErrors> {
    let config = parse(text, file)?;
    validate::validate(&config, file)?;
    Ok(config)
}

/// Reads, parses and validates a routing config file.
pub fn load_file(path: &Path) -> Result<RoutingConfig, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&file, "", format!("cannot read the file: {e}")))?;
    load_str(&text, &file)
}

/// Parses without the semantic checks, for sources that assemble one config from several
/// documents (each is checked as part of the whole with [`load_str`]).
pub fn parse_str(text: &str, file: &str) -> Result<RoutingConfig, ConfigErrors> {
    parse(text, file)
}

fn parse(text: &str, file: &str) -> Result<RoutingConfig, ConfigErrors> {
    if text.trim().is_empty() {
        return Err(ConfigErrors::single(file, "", "the file is empty"));
    }
    // serde_path_to_error records where in the document a type error happened; serde-saphyr's
    // own error adds the line and column.
    let mut path = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, RoutingConfig>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        let path = if path == "." { String::new() } else { path };
        ConfigErrors::single(file, path, e.to_string())
    })
}

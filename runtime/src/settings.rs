//! What every area's settings share: the error a bad value gives, the range check, and
//! the list-or-comma-separated form of list settings.
//!
//! A leaf: it imports nothing of the crate, so each area's settings (`http::config`,
//! `fleet::config`, ...) can use it while the top-level [`crate::config`], which the app
//! assembles from those areas, depends on them and not the other way round.

/// A configuration value that breaks a rule. `key` is the dotted TOML path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// Fails with a [`ConfigError`] for `key` unless `value` lies in `min..=max`.
pub fn check_range<T: PartialOrd + std::fmt::Display>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(key, format!("must be between {min} and {max}, not {value}")));
    }
    Ok(())
}

/// A list setting that also takes one comma-separated string: the obvious form in an
/// environment variable (`FORECOURT_MQTT__GROUPS=east` or `=east,north`), where the TOML
/// array form (`=[east, north]`) is easy to get wrong. Each item keeps its own checks
/// and error message. Use with `#[serde(deserialize_with = "list_or_csv")]`.
pub fn list_or_csv<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct ListOrCsv<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ListOrCsv<T> {
        type Value = Vec<T>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a list, or its items in one string separated by commas")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<T>, E> {
            use serde::de::IntoDeserializer;
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| T::deserialize(item.to_owned().into_deserializer()))
                .collect()
        }
    }

    deserializer.deserialize_any(ListOrCsv(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "list_or_csv")]
        groups: Vec<String>,
    }

    #[test]
    fn a_list_setting_takes_a_list_or_one_comma_separated_string() {
        let groups = |json: &str| serde_json::from_str::<Lists>(json).map(|lists| lists.groups);
        assert_eq!(groups(r#"{"groups": ["east", "north"]}"#).unwrap(), ["east", "north"]);
        assert_eq!(groups(r#"{"groups": "east"}"#).unwrap(), ["east"]);
        assert_eq!(groups(r#"{"groups": "east, north,"}"#).unwrap(), ["east", "north"]);
        assert!(groups(r#"{"groups": "" }"#).unwrap().is_empty());
        assert!(groups(r#"{"groups": 7}"#).is_err());
    }

    #[test]
    fn a_range_check_names_the_key_and_the_bounds() {
        assert!(check_range("server.workers", 4, 1, 1024).is_ok());
        let error = check_range("server.workers", 0, 1, 1024).unwrap_err();
        assert_eq!(error.key, "server.workers");
        assert_eq!(error.message, "must be between 1 and 1024, not 0");
    }
}

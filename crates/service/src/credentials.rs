//! The credentials cache of a server's directory, from `[directory]`
//! `credentials_cache_secs` and `credentials_cache_entries` (see
//! `qs_directory::credentials_cache`).

use qs_config::DirectoryConfig;
use qs_directory::{CredentialsCacheSettings, Directory};

/// The cache settings `[directory]` asks for.
pub fn cache_settings(config: &DirectoryConfig) -> CredentialsCacheSettings {
    CredentialsCacheSettings {
        ttl: config.credentials_cache_ttl,
        max_entries: config.credentials_cache_entries,
    }
}

/// Sets up `directory`'s credentials cache as `[directory]` asks.
pub fn configure(directory: &Directory, config: &DirectoryConfig) {
    directory.configure_credentials_cache(cache_settings(config));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_settings_follow_the_config() {
        let config = qs_config::Config::parse(
            "[directory]\ncredentials_cache_secs = 30\ncredentials_cache_entries = 7\n",
            std::path::Path::new("/etc/qs/quicksilver.toml"),
        )
        .unwrap();
        let settings = cache_settings(&config.directory);
        assert_eq!(settings.ttl, Duration::from_secs(30));
        assert_eq!(settings.max_entries, 7);
    }
}

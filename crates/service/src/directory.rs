//! The user directory as `[directory]` describes it: its `file`, opened with
//! the options the section asks for (`subaddress_separator`). Every module
//! that reads the directory opens it here; the servers that check passwords
//! then set up its credentials cache ([`crate::credentials`]).

use qs_config::DirectoryConfig;
use qs_directory::{Directory, Options};

/// The options `[directory]` asks for.
pub fn options(config: &DirectoryConfig) -> Options {
    Options {
        subaddress_separator: config.subaddress_separator,
    }
}

/// Opens the directory named by `[directory] file` with its options.
pub fn open(config: &DirectoryConfig) -> Result<Directory, qs_directory::Error> {
    Directory::open(&config.file, options(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_opens_with_the_configured_separator() {
        let tmp = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = \"{}\"\n[directory]\nsubaddress_separator = \"-\"\n",
            tmp.path().display()
        );
        let config = qs_config::Config::parse(&text, &tmp.path().join("quicksilver.toml")).unwrap();
        assert_eq!(options(&config.directory).subaddress_separator, Some('-'));
        assert!(open(&config.directory).is_err(), "no directory file yet");
        Directory::create(&config.directory.file, Options::default()).unwrap();
        let directory = open(&config.directory).unwrap();
        assert_eq!(directory.path(), config.directory.file);
    }
}

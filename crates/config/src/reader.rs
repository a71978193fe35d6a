//! A small walker over a parsed TOML document that reads typed values with
//! defaults and collects *every* problem with its key path, instead of stopping
//! at the first one as serde's `deny_unknown_fields` would.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use crate::{IpNetwork, KeyError};

/// Where the problems found while reading are collected.
#[derive(Default)]
pub(crate) struct Problems(RefCell<Vec<KeyError>>);

impl Problems {
    pub(crate) fn push(&self, key: impl Into<String>, message: impl Into<String>) {
        self.0.borrow_mut().push(KeyError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_inner(self) -> Vec<KeyError> {
        self.0.into_inner()
    }
}

/// One table of the document (or an absent one, whose keys all take defaults).
pub(crate) struct Section<'a> {
    path: String,
    table: Option<&'a Table>,
    problems: &'a Problems,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Section<'a> {
    pub(crate) fn root(table: &'a Table, problems: &'a Problems) -> Self {
        Section {
            path: String::new(),
            table: Some(table),
            problems,
            used: RefCell::default(),
        }
    }

    /// The full key path of `key` inside this section.
    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn problem(&self, key: &str, message: impl Into<String>) {
        self.problems.push(self.key_path(key), message);
    }

    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(key.to_string());
        self.table.and_then(|t| t.get(key))
    }

    /// True when the key is written in the file.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }

    pub(crate) fn string(&self, key: &str, default: &str) -> String {
        match self.raw(key) {
            None => default.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.problem(key, format!("expected a string, found {}", kind(other)));
                default.to_string()
            }
        }
    }

    /// A string that must be one of `choices`.
    pub(crate) fn choice(&self, key: &str, default: &str, choices: &[&str]) -> String {
        let value = self.string(key, default);
        if choices.contains(&value.as_str()) {
            value
        } else {
            self.problem(
                key,
                format!("\"{value}\" is not one of: {}", choices.join(", ")),
            );
            default.to_string()
        }
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> bool {
        match self.raw(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.problem(
                    key,
                    format!("expected true or false, found {}", kind(other)),
                );
                default
            }
        }
    }

    /// A whole number in `min..=max`.
    pub(crate) fn number(&self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.raw(key) {
            None => default,
            Some(Value::Integer(n)) if *n >= 0 && (*n as u64) >= min && (*n as u64) <= max => {
                *n as u64
            }
            Some(Value::Integer(n)) => {
                self.problem(key, format!("{n} is out of range ({min} to {max})"));
                default
            }
            Some(other) => {
                self.problem(
                    key,
                    format!("expected a whole number, found {}", kind(other)),
                );
                default
            }
        }
    }

    /// A whole number in `min..=max` as the type the program counts it in
    /// (`usize` for sizes in memory and connections, `u32`, `u16` …). A `max`
    /// the type cannot hold is lowered to the largest value it can, so every
    /// number read fits and a larger one is refused as out of range.
    pub(crate) fn count<T: TryFrom<u64> + Default>(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> T {
        let max = largest_fitting::<T>(max);
        let n = self.number(key, default, min, max);
        T::try_from(n).unwrap_or_else(|_| {
            // Only a built-in default the type cannot hold gets here.
            self.problem(key, format!("{n} is out of range ({min} to {max})"));
            T::default()
        })
    }

    /// A time written in whole seconds (a `*_secs` key), `min..=max` seconds.
    pub(crate) fn secs(&self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.number(key, default, min, max))
    }

    /// A time written in whole days (a `*_days` key), `min..=max` days.
    pub(crate) fn days(&self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.number(key, default, min, max).saturating_mul(86_400))
    }

    pub(crate) fn path(&self, key: &str, default: &str) -> PathBuf {
        let value = self.string(key, default);
        if value.is_empty() {
            self.problem(key, "a path may not be empty");
            return PathBuf::from(default);
        }
        PathBuf::from(value)
    }

    /// An optional path: absent or "" means none.
    pub(crate) fn optional_path(&self, key: &str) -> Option<PathBuf> {
        let value = self.string(key, "");
        (!value.is_empty()).then(|| PathBuf::from(value))
    }

    pub(crate) fn string_list(&self, key: &str, default: &[&str]) -> Vec<String> {
        match self.raw(key) {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.problem(
                            &format!("{key}[{i}]"),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                self.problem(
                    key,
                    format!("expected a list of strings, found {}", kind(other)),
                );
                default.iter().map(|s| s.to_string()).collect()
            }
        }
    }

    /// A list of listening addresses (`"127.0.0.1:2525"`, `"[::1]:2525"`).
    pub(crate) fn socket_addrs(&self, key: &str, default: &[&str]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        let explicit = self.has(key);
        for (i, text) in self.string_list(key, default).iter().enumerate() {
            match text.parse::<SocketAddr>() {
                Ok(addr) => out.push(addr),
                Err(_) => {
                    let at = if explicit {
                        format!("{key}[{i}]")
                    } else {
                        key.to_string()
                    };
                    self.problem(&at, not_a_socket_addr(text));
                }
            }
        }
        out
    }

    /// One address; `""` is allowed when `optional` and gives `None`.
    pub(crate) fn socket_addr(&self, key: &str, default: &str) -> Option<SocketAddr> {
        let text = self.string(key, default);
        if text.is_empty() {
            return None;
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(key, not_a_socket_addr(&text));
                None
            }
        }
    }

    pub(crate) fn networks(&self, key: &str) -> Vec<IpNetwork> {
        self.networks_or(key, &[])
    }

    /// A list of networks, `default` when the key is absent.
    pub(crate) fn networks_or(&self, key: &str, default: &[&str]) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        for (i, text) in self.string_list(key, default).iter().enumerate() {
            match text.parse::<IpNetwork>() {
                Ok(net) => out.push(net),
                Err(reason) => self.problem(&format!("{key}[{i}]"), reason),
            }
        }
        out
    }

    /// A sub-table; absent means every key inside takes its default.
    pub(crate) fn section(&self, key: &str) -> Section<'a> {
        let table = match self.raw(key) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                self.problem(key, format!("expected a table, found {}", kind(other)));
                None
            }
        };
        Section {
            path: self.key_path(key),
            table,
            problems: self.problems,
            used: RefCell::default(),
        }
    }

    /// An array of tables (`[[section.key]]`).
    pub(crate) fn tables(&self, key: &str) -> Vec<Section<'a>> {
        match self.raw(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Table(t) => Some(Section {
                        path: format!("{}[{i}]", self.key_path(key)),
                        table: Some(t),
                        problems: self.problems,
                        used: RefCell::default(),
                    }),
                    other => {
                        self.problem(
                            &format!("{key}[{i}]"),
                            format!("expected a table, found {}", kind(other)),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.problem(
                    key,
                    format!("expected a list of tables, found {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    /// Renames this section's path in messages (e.g. `pop_client.account[0]`
    /// becomes `pop_client.account "family"` once the name is known).
    pub(crate) fn rename(&mut self, path: String) {
        self.path = path;
    }

    /// Reports every key of the table that no reader asked for.
    pub(crate) fn finish(&self) {
        if let Some(table) = self.table {
            let used = self.used.borrow();
            for key in table.keys() {
                if !used.contains(key.as_str()) {
                    self.problem(key, "unknown key");
                }
            }
        }
    }
}

/// `max`, or the largest number below it that `T` can hold.
fn largest_fitting<T: TryFrom<u64>>(max: u64) -> u64 {
    if T::try_from(max).is_ok() {
        return max;
    }
    (0..u64::BITS)
        .rev()
        .map(|bits| (1u64 << bits) - 1)
        .find(|&m| m < max && T::try_from(m).is_ok())
        .unwrap_or(0)
}

fn not_a_socket_addr(text: &str) -> String {
    format!("\"{text}\" is not a socket address (IP:port, e.g. 127.0.0.1:2525 or [::1]:2525)")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "a whole number",
        Value::Float(_) => "a decimal number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

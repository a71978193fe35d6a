//! The value types several sections share (networks, TLS towards a remote
//! server, passwords), and the checks of host names and addresses.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::reader::Section;

/// TLS towards a remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTls {
    /// STARTTLS, required: never fall back to plaintext.
    StartTls,
    /// TLS from the first byte.
    Implicit,
    /// No TLS.
    None,
}

impl ClientTls {
    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "implicit" => ClientTls::Implicit,
            "none" => ClientTls::None,
            _ => ClientTls::StartTls,
        }
    }
}

/// A password given in the file or in a file of its own. `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password.
    #[default]
    None,
    /// Written in the config file.
    Inline(String),
    /// Read from this file (first line) when needed.
    File(PathBuf),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::None => f.write_str("None"),
            PasswordSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            PasswordSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl PasswordSource {
    /// Reads the password (the first line of the file, without its line end).
    pub fn read(&self) -> std::io::Result<Option<String>> {
        match self {
            PasswordSource::None => Ok(None),
            PasswordSource::Inline(p) => Ok(Some(p.clone())),
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path)?;
                Ok(Some(text.lines().next().unwrap_or("").to_string()))
            }
        }
    }
}

/// An IP network in CIDR notation, e.g. `192.168.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// True when `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("\"{s}\" is not a network (e.g. 192.168.1.0/24 or 10.0.0.7)");
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
        };
        if prefix > max {
            return Err(format!("\"{s}\": prefix length {prefix} is over {max}"));
        }
        Ok(IpNetwork { addr, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

pub(crate) fn read_password(s: &Section<'_>, data_dir: &Path) -> PasswordSource {
    let inline = s.string("password", "");
    let file = s.optional_path("password_file");
    match (inline.is_empty(), file) {
        (true, None) => PasswordSource::None,
        (false, None) => PasswordSource::Inline(inline),
        (true, Some(path)) => PasswordSource::File(data_dir.join(path)),
        (false, Some(_)) => {
            s.problem(
                "password_file",
                "give either password or password_file, not both",
            );
            PasswordSource::Inline(inline)
        }
    }
}

/// Splits `host:port` (or `[v6]:port`), checking the port.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

pub(crate) fn looks_like_address(text: &str) -> bool {
    match text.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && is_host_name(domain),
        None => false,
    }
}

pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

//! The run file: `<data_dir>/run/<module>.json`, written by a daemon once its
//! listeners are bound. It says which process serves which addresses, so that
//! `qsctl status`, health checks and tests (which listen on port 0) can find them.
//! Writing it is the moment a daemon is ready: a predecessor waiting to hand
//! over ([`crate::restart`]) and systemd (`READY=1`, [`crate::notify`]) learn it
//! here. `instance` tells two runs of one process id apart (an in-place restart).
//!
//! ```json
//! {"module":"smtp-server","pid":4242,"started":1795463687,"instance":"4242-1795463687123456789",
//!  "listeners":{"smtp_server.listen":["127.0.0.1:2525"]}}
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the run file of `module` lives.
pub fn path(data_dir: &Path, module: &str) -> PathBuf {
    data_dir.join("run").join(format!("{module}.json"))
}

/// Writes the run file atomically (temp file, rename), then tells systemd the
/// daemon is ready. `listeners` maps each config key to the addresses actually
/// bound for it; inherited sockets that none of them took are closed.
pub fn write(
    data_dir: &Path,
    module: &str,
    listeners: &BTreeMap<String, Vec<SocketAddr>>,
) -> std::io::Result<PathBuf> {
    let target = path(data_dir, module);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let started = now.as_secs();
    let pid = std::process::id();
    let instance = format!("{pid}-{}", now.as_nanos());
    let mut json = format!(
        "{{\"module\":\"{module}\",\"pid\":{pid},\"started\":{started},\"instance\":\"{instance}\",\"listeners\":{{"
    );
    for (i, (key, addrs)) in listeners.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        json.push_str(&format!("\"{key}\":[{}]", list.join(",")));
    }
    json.push_str("}}\n");
    let temp = target.with_extension(format!("json.tmp.{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(json.as_bytes())?;
    }
    std::fs::rename(&temp, &target)?;
    crate::listen::close_unclaimed();
    crate::notify::ready();
    Ok(target)
}

/// The process id the run file of `module` names, if there is one.
pub fn read_pid(data_dir: &Path, module: &str) -> Option<u32> {
    let text = std::fs::read_to_string(path(data_dir, module)).ok()?;
    field(&text, "pid")?.parse().ok()
}

/// The instance the run file of `module` names (changes at every start, also
/// when an in-place restart keeps the process id).
pub fn read_instance(data_dir: &Path, module: &str) -> Option<String> {
    let text = std::fs::read_to_string(path(data_dir, module)).ok()?;
    Some(field(&text, "instance")?.trim_matches('"').to_string())
}

/// The raw value of a top-level scalar `name` in a run file's JSON.
fn field<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &text[start..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim())
}

/// Removes the run file if it is still this process's.
pub fn remove(data_dir: &Path, module: &str) {
    let target = path(data_dir, module);
    let ours = std::fs::read_to_string(&target)
        .is_ok_and(|text| text.contains(&format!("\"pid\":{},", std::process::id())));
    if ours {
        let _ = std::fs::remove_file(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_file_names_the_bound_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        listeners.insert(
            "smtp_server.listen".to_string(),
            vec!["127.0.0.1:2525".parse().unwrap()],
        );
        let p = write(dir.path(), "smtp-server", &listeners).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\"smtp_server.listen\":[\"127.0.0.1:2525\"]"),
            "{text}"
        );
        assert!(text.contains(&format!("\"pid\":{}", std::process::id())));
        assert_eq!(
            read_pid(dir.path(), "smtp-server"),
            Some(std::process::id())
        );
        let first = read_instance(dir.path(), "smtp-server").unwrap();
        write(dir.path(), "smtp-server", &listeners).unwrap();
        let second = read_instance(dir.path(), "smtp-server").unwrap();
        assert!(first.starts_with(&format!("{}-", std::process::id())));
        assert_ne!(first, second);
        remove(dir.path(), "smtp-server");
        assert!(!p.exists());
    }
}

//! The run file: `<data_dir>/run/<module>.json`, written by a daemon once its
//! listeners are bound. It says which process serves which addresses, so that
//! `qsctl status`, health checks and tests (which listen on port 0) can find them.
//!
//! ```json
//! {"module":"smtp-server","pid":4242,"started":1795463687,
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

/// Writes the run file atomically (temp file, rename). `listeners` maps each
/// config key to the addresses actually bound for it.
pub fn write(
    data_dir: &Path,
    module: &str,
    listeners: &BTreeMap<String, Vec<SocketAddr>>,
) -> std::io::Result<PathBuf> {
    let target = path(data_dir, module);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut json = format!(
        "{{\"module\":\"{module}\",\"pid\":{},\"started\":{started},\"listeners\":{{",
        std::process::id()
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
    Ok(target)
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
        remove(dir.path(), "smtp-server");
        assert!(!p.exists());
    }
}

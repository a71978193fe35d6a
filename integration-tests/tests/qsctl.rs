//! qsctl end to end: init, the directory commands, their errors, and the
//! directory's durability under concurrent writers and SIGKILL.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::{Installation, all_files, binary, text};

#[test]
fn init_creates_everything_once_and_then_changes_nothing() {
    let inst = Installation::empty();
    let out = inst.qsctl(&["init", "--domain", "famille.example"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(inst.config.exists());
    let data = inst.data_dir();
    for p in [
        "tls/cert.pem",
        "tls/key.pem",
        "directory.json",
        "mail",
        "maildrop",
        "run",
    ] {
        assert!(data.join(p).exists(), "{p} missing after init:\n{stdout}");
    }
    // The generated postmaster password is printed once, and it works.
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password for postmaster@famille.example: "))
        .unwrap_or_else(|| panic!("no password line in:\n{stdout}"))
        .trim()
        .to_string();
    let users = inst.ok(&["user", "list"]);
    assert!(users.contains("postmaster@famille.example"), "{users}");
    let dir =
        qs_directory::Directory::open(data.join("directory.json"), Default::default()).unwrap();
    assert!(
        dir.verify_blocking(
            "postmaster@famille.example",
            &qs_directory::Secret::new(password.as_bytes())
        )
        .unwrap()
        .is_some()
    );

    // A second run keeps everything and says so.
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = all_files(inst.dir.path())
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let again = inst.ok(&["init", "--domain", "famille.example"]);
    assert!(again.contains("nothing to do"), "{again}");
    for (path, bytes) in before {
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
}

#[test]
fn init_keeps_an_existing_config_and_creates_what_is_missing() {
    let inst = Installation::empty();
    std::fs::write(
        &inst.config,
        "hostname = \"mx.custom.example\"\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let out = inst.qsctl_stdin(&["init", "--password-stdin"], "pw-from-stdin\n");
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(&inst.config).unwrap();
    assert_eq!(
        config,
        "hostname = \"mx.custom.example\"\ndata_dir = \"data\"\n"
    );
    let data = inst.dir.path().join("data");
    assert!(data.join("tls/cert.pem").exists());
    assert!(data.join("directory.json").exists());
    // The password came from stdin, so it is not printed.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pw-from-stdin"));
}

#[test]
fn init_refuses_a_broken_config_and_names_the_key() {
    let inst = Installation::empty();
    std::fs::write(&inst.config, "[smtp_server]\nlisten = [\"nowhere\"]\n").unwrap();
    let err = inst.fails(&["init"]);
    assert!(err.contains("smtp_server.listen[0]"), "{err}");
    assert!(
        !inst.data_dir().exists(),
        "nothing may be created from a broken config"
    );
}

#[test]
fn users_domains_and_aliases_round_trip() {
    let inst = Installation::init();
    inst.ok(&[
        "domain",
        "add",
        "company.example",
        "--alias-of",
        "example.test",
    ]);
    inst.ok(&["domain", "add", "other.example"]);
    let domains = inst.ok(&["domain", "list"]);
    assert!(domains.contains("example.test"), "{domains}");
    assert!(domains.contains("company.example"), "{domains}");
    assert!(domains.contains("other.example"), "{domains}");

    let out = inst.qsctl_stdin(
        &[
            "user",
            "add",
            "Alice@Example.test",
            "--name",
            "Alice Dupont",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let users = inst.ok(&["user", "list"]);
    // The local part keeps the case it was given; lookups ignore case.
    assert!(
        users.contains("Alice@example.test\tAlice Dupont"),
        "{users}"
    );

    inst.ok(&[
        "alias",
        "add",
        "info@example.test",
        "alice@example.test",
        "someone@far.example",
    ]);
    let aliases = inst.ok(&["alias", "list"]);
    assert!(aliases.contains("info@example.test"), "{aliases}");
    assert!(aliases.contains("someone@far.example"), "{aliases}");

    inst.ok(&["alias", "del", "info@example.test"]);
    assert!(!inst.ok(&["alias", "list"]).contains("info@example.test"));

    let out = inst.qsctl_stdin(
        &["user", "passwd", "alice@example.test", "--password-stdin"],
        "new-pass\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let dir =
        qs_directory::Directory::open(inst.data_dir().join("directory.json"), Default::default())
            .unwrap();
    assert!(
        dir.verify_blocking(
            "alice@example.test",
            &qs_directory::Secret::new(&b"new-pass"[..])
        )
        .unwrap()
        .is_some()
    );
    assert!(
        dir.verify_blocking(
            "alice@example.test",
            &qs_directory::Secret::new(&b"correct horse battery"[..])
        )
        .unwrap()
        .is_none()
    );

    inst.ok(&["user", "del", "alice@example.test"]);
    assert!(
        !inst
            .ok(&["user", "list"])
            .to_lowercase()
            .contains("alice@example.test")
    );
}

#[test]
fn every_misuse_gives_one_clear_line_and_a_failure() {
    let inst = Installation::init();
    inst.qsctl_stdin(
        &["user", "add", "bob@example.test", "--password-stdin"],
        "pw\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (&["user", "add", "carol@nowhere.example"], "nowhere.example"),
        (&["user", "add", "bob@example.test"], "already exists"),
        (&["user", "add", "not an address"], "not an address"),
        (&["user", "add", "a@@example.test"], "a@@example.test"),
        (
            &["user", "del", "nobody@example.test"],
            "nobody@example.test",
        ),
        (
            &["user", "passwd", "nobody@example.test"],
            "nobody@example.test",
        ),
        (&["domain", "add", "example.test"], "already"),
        (&["domain", "add", "bad_domain!"], "bad_domain!"),
        (&["domain", "del", "nowhere.example"], "nowhere.example"),
        (&["domain", "del", "example.test"], "example.test"),
        (
            &[
                "domain",
                "add",
                "x.example",
                "--alias-of",
                "nowhere.example",
            ],
            "nowhere.example",
        ),
        (
            &["alias", "add", "bob@example.test", "x@far.example"],
            "bob@example.test",
        ),
        (
            &["alias", "add", "team@nowhere.example", "bob@example.test"],
            "nowhere.example",
        ),
        (
            &["alias", "del", "nothing@example.test"],
            "nothing@example.test",
        ),
    ];
    for (args, needle) in cases {
        let err = inst.fails(args);
        assert!(
            err.contains(needle),
            "qsctl {args:?}: {err:?} does not mention {needle:?}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "qsctl {args:?}: not one line: {err:?}"
        );
        assert!(err.starts_with("qsctl: "), "{err:?}");
    }
    // A password on stdin that is empty is refused too.
    let out = inst.qsctl_stdin(
        &["user", "add", "dave@example.test", "--password-stdin"],
        "\n",
    );
    assert!(!out.status.success());
    assert!(!inst.ok(&["user", "list"]).contains("dave@"));
}

#[test]
fn a_missing_config_is_one_clear_error() {
    let inst = Installation::empty();
    let err = inst.fails(&["user", "list"]);
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains("qsctl init"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
}

#[test]
fn no_file_holds_a_password_in_clear() {
    let inst = Installation::init();
    let secret = "unmistakable-pass-phrase-4711";
    let out = inst.qsctl_stdin(
        &["user", "add", "eve@example.test", "--password-stdin"],
        &format!("{secret}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
    for file in all_files(inst.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} contains the password",
            file.display()
        );
        assert!(
            !bytes.windows(17).any(|w| w == b"postmaster-secret"),
            "{} contains the postmaster's password",
            file.display()
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(inst.data_dir().join("directory.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn two_processes_adding_users_at_once_lose_none() {
    let inst = Installation::init();
    let config = inst.config.clone();
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|prefix| {
            let config = config.clone();
            std::thread::spawn(move || {
                for i in 0..12 {
                    let mut child = Command::new(binary("qsctl"))
                        .arg("--config")
                        .arg(&config)
                        .args([
                            "user",
                            "add",
                            &format!("{prefix}{i}@example.test"),
                            "--password-stdin",
                        ])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
                    let out = child.wait_with_output().unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let users = inst.ok(&["user", "list"]);
    let found: BTreeSet<&str> = users
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| a.starts_with('a') || a.starts_with('b'))
        .collect();
    assert_eq!(found.len(), 24, "users lost:\n{users}");
}

#[test]
fn sigkill_during_a_directory_write_leaves_the_old_or_the_new_file() {
    let inst = Installation::init();
    let file = inst.data_dir().join("directory.json");
    // A large directory makes every write take long enough to be interrupted.
    {
        let mut data: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let aliases = data["aliases"].as_array_mut().unwrap();
        for i in 0..4000 {
            aliases.push(serde_json::json!({
                "address": format!("alias{i}@example.test"),
                "targets": [format!("target{i}@far.example")],
            }));
        }
        std::fs::write(&file, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
    }
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut interrupted = 0;
    for i in 0..25 {
        let before = domain_count(&file);
        let mut child = Command::new(binary("qsctl"))
            .arg("--config")
            .arg(&inst.config)
            .args(["domain", "add", &format!("d{i}.example")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_micros(rng_state % 20_000));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        // The file must load, and hold either the old or the new set of domains.
        let after = domain_count(&file);
        assert!(
            after == before || after == before + 1,
            "{before} domains became {after}"
        );
    }
    assert!(
        interrupted > 0,
        "no run was interrupted; the test proves nothing"
    );
}

fn domain_count(file: &std::path::Path) -> usize {
    let dir = qs_directory::Directory::open(file, Default::default()).unwrap();
    dir.refresh().unwrap().domains().count()
}

#[test]
fn dkim_keys_are_kept_private_never_replaced_and_their_records_shown_again() {
    use std::os::unix::fs::PermissionsExt;
    let inst = Installation::init();
    let out = inst.qsctl(&[
        "dkim",
        "generate",
        "Example.test",
        "--selector",
        "s1",
        "--algorithm",
        "ed25519",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let record = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        record.starts_with("s1._domainkey.example.test TXT \"v=DKIM1; k=ed25519; p="),
        "{record}"
    );
    let dir = inst.data_dir().join("dkim");
    let key = dir.join("example.test.s1.key");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir), 0o700);
    // The private half is on disk only, never printed.
    let pem = std::fs::read_to_string(&key).unwrap();
    let secret = pem.lines().nth(1).unwrap();
    assert!(!text(&out).contains(secret) && !text(&out).contains("PRIVATE"));

    // The same selector again is refused and the key kept, whatever the algorithm.
    let refused = inst.fails(&["dkim", "generate", "example.test", "--selector", "S1"]);
    assert!(refused.contains("already exists"), "{refused}");
    assert!(refused.contains("new selector"), "{refused}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);

    assert_eq!(inst.ok(&["dkim", "show", "example.test"]).trim(), record);
    // A new selector (rotation): it signs, the old record stays shown.
    let rsa = inst.ok(&["dkim", "generate", "example.test", "--selector", "s2"]);
    assert!(
        rsa.contains("s2._domainkey.example.test TXT \"v=DKIM1; k=rsa; p=MIIB"),
        "{rsa}"
    );
    let old = std::fs::File::options().write(true).open(&key).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let shown = inst.ok(&["dkim", "show", "example.test"]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines[0].starts_with("s2._domainkey."), "{shown}");
    assert_eq!(lines[1], record);
    let listed = inst.ok(&["dkim", "list"]);
    assert!(
        listed.contains("example.test\ts2\trsa\tsigning\t"),
        "{listed}"
    );
    assert!(
        listed.contains("example.test\ts1\ted25519\tolder\t"),
        "{listed}"
    );

    for (args, problem) in [
        (
            &["dkim", "show", "other.test"][..],
            "no DKIM key for other.test",
        ),
        (&["dkim", "generate", "localhost"], "not a domain name"),
        (
            &["dkim", "generate", "example.test", "--selector", "a.b"],
            "not a DKIM selector",
        ),
        (
            &["dkim", "generate", "example.test", "--algorithm", "dsa"],
            "not a DKIM key algorithm",
        ),
    ] {
        let err = inst.fails(args);
        assert!(err.contains(problem), "{args:?}: {err}");
    }
}

#[test]
fn dns_prints_each_local_domain_s_mx_spf_dkim_and_dmarc_records() {
    let inst = Installation::init();
    // Before any key: the records, and how to make the DKIM one.
    let out = inst.ok(&["dns"]);
    let hostname = out
        .lines()
        .find_map(|l| l.strip_prefix("example.test. MX 10 "))
        .unwrap_or_else(|| panic!("no MX record in\n{out}"))
        .trim_end_matches('.')
        .to_string();
    assert!(!hostname.is_empty(), "{out}");
    assert!(out.contains("example.test. TXT \"v=spf1 mx "), "{out}");
    assert!(out.contains("qsctl dkim generate example.test"), "{out}");
    assert!(
        out.contains(
            "_dmarc.example.test. TXT \"v=DMARC1; p=none; rua=mailto:postmaster@example.test\""
        ),
        "{out}"
    );
    // Every record line is a comment or NAME. TYPE DATA.
    for line in out.lines().filter(|l| !l.starts_with(';') && !l.is_empty()) {
        let mut words = line.split(' ');
        assert!(words.next().unwrap().ends_with('.'), "{line}");
        assert!(["MX", "TXT"].contains(&words.next().unwrap()), "{line}");
    }

    // With a key, its record is the one `dkim show` prints, name fully qualified.
    let record = inst.ok(&["dkim", "generate", "example.test", "--selector", "s1"]);
    let record = record.trim();
    let (name, value) = record.split_once(" TXT ").unwrap();
    let out = inst.ok(&["dns", "Example.test"]);
    assert!(
        out.contains(&format!("{name}. TXT {value}\n")),
        "{out}\n{record}"
    );
    assert!(!out.contains("PRIVATE"), "{out}");

    // A second domain gets its own block; an alias and a stranger none.
    inst.ok(&["domain", "add", "second.test"]);
    inst.ok(&["domain", "add", "alias.test", "--alias-of", "second.test"]);
    let out = inst.ok(&["dns"]);
    assert!(out.contains("second.test. MX 10 "), "{out}");
    assert!(!out.contains("alias.test. MX"), "{out}");
    let refused = inst.fails(&["dns", "stranger.test"]);
    assert!(
        refused.contains("stranger.test is not a local domain"),
        "{refused}"
    );
}

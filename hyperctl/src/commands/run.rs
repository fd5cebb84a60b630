//! `hyperctl run`: image -> store (importing a path first) -> bundle under
//! `<root>/containers/<name>/bundle` -> `runv run`. Foreground runs exit with runv's
//! status (the container's exit code) and free the VM at once (`runv delete`);
//! `--rm` also removes the bundle and record. `-d` leaves the container running with
//! its output appended to `<root>/containers/<name>/log`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use runv_image::{BindMount, Image, Overrides, Store};

use super::{exit_code, now_rfc3339};
use crate::cli::RunArgs;
use crate::containers::{generate_name, validate_name, Containers, Record};
use crate::runv::Runv;
use crate::tty::{self, Handover, RawMode};

pub fn run(root: &Path, a: &RunArgs) -> Result<i32> {
    check_combination(a)?;
    let overrides = overrides(a)?;
    let runv = Runv::new(root)?;
    let name = match &a.name {
        Some(n) => {
            validate_name(n)?;
            n.clone()
        }
        None => generate_name()?,
    };
    let store = super::open_store(root)?;
    let image = resolve_image(&store, a.image())?;
    let containers = Containers::new(root);
    containers.reserve(&name)?;
    // From here on a failure before runv has the container removes what was made.
    let rec = Record {
        name: name.clone(),
        image: image.name.clone(),
        manifest: image.record.manifest.to_string(),
        command: Vec::new(),
        created: now_rfc3339(),
        detached: a.detach,
        exit_code: None,
    };
    let prepared = prepare(&store, &image, &containers, &name, a, &overrides).and_then(|args| {
        let rec = Record {
            command: args,
            ..rec
        };
        containers.save(&rec)?;
        Ok(rec)
    });
    let mut rec = match prepared {
        Ok(r) => r,
        Err(e) => {
            discard(&containers, &name);
            return Err(e);
        }
    };
    if a.detach {
        run_detached(&runv, &containers, &name)?;
        if a.rm {
            // Removed when it stops, by a watcher that outlives this call. If the watcher
            // cannot start, the container keeps running: say so rather than kill it.
            super::autoremove::spawn(root, &name)
                .with_context(|| format!("{name} runs, but will not be removed when it stops"))?;
        }
        return Ok(0);
    }
    let code = if a.tty {
        run_tty(&runv, &containers, &name, a.interactive)
    } else {
        run_plain(&runv, &containers, &name, a.interactive)
    };
    // Whatever happened, the VM goes: an exited container keeps no VM, only its record.
    // (runv run in the foreground deletes its container itself, as runc does; this covers
    // a runv that did not get that far.)
    let deleted = runv.delete(&name, true);
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            discard(&containers, &name);
            return Err(e);
        }
    };
    deleted.with_context(|| format!("deleting container {name} from runv"))?;
    if a.rm {
        containers.remove(&name)?;
    } else {
        // As docker: the exited container stays, with its exit code, until `rm`.
        rec.exit_code = Some(code);
        containers.save(&rec)?;
    }
    Ok(code)
}

fn check_combination(a: &RunArgs) -> Result<()> {
    if a.detach && (a.tty || a.interactive) {
        bail!("-d cannot be combined with -t or -i: hyperctl has no attach, so a detached container gets no terminal or stdin");
    }
    Ok(())
}

fn overrides(a: &RunArgs) -> Result<Overrides> {
    let mounts = a
        .volumes
        .iter()
        .map(|v| {
            v.parse::<BindMount>()
                .with_context(|| format!("-v {v}: expected HOST:CONTAINER[:ro|rw], both absolute"))
        })
        .collect::<Result<Vec<_>>>()?;
    for m in &mounts {
        std::fs::metadata(&m.host)
            .with_context(|| format!("-v: host path {}", m.host.display()))?;
    }
    Ok(Overrides {
        args: a.command().to_vec(),
        entrypoint: a.entrypoint.as_ref().map(|e| vec![e.clone()]),
        env: a.env.clone(),
        cwd: a.workdir.clone(),
        user: a.user.clone(),
        terminal: a.tty,
        mounts,
        hostname: a.name.clone().filter(|n| is_hostname(n)),
    })
}

fn is_hostname(n: &str) -> bool {
    n.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An existing path is imported (an OCI layout directory or an archive); anything else
/// is a name in the store.
pub fn resolve_image(store: &Store, arg: &str) -> Result<Image> {
    let path = Path::new(arg);
    if path.exists() {
        let imported = super::load::import_checked(store, path)?;
        let name = imported
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| imported.record.manifest.to_string());
        return store
            .image(&name)
            .with_context(|| format!("image {name} imported from {arg}"));
    }
    store.image(arg).with_context(|| {
        format!("image {arg:?}: not in the store and not a file or directory (hyperctl load -i ARCHIVE imports one)")
    })
}

/// Makes the bundle; returns the process args it runs.
fn prepare(
    store: &Store,
    image: &Image,
    containers: &Containers,
    name: &str,
    a: &RunArgs,
    ov: &Overrides,
) -> Result<Vec<String>> {
    let bundle = containers.bundle(name);
    let mut spec = runv_image::prepare_bundle(store, image, &bundle, ov)
        .with_context(|| format!("preparing the bundle of {name} from {}", image.name))?;
    let mut ann: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    if let Some(c) = a.cpus {
        ann.insert(runv_runtime::sizing::ANNOTATION_CPUS.into(), c.to_string());
    }
    if let Some(m) = a.memory {
        ann.insert(
            runv_runtime::sizing::ANNOTATION_MEMORY.into(),
            m.to_string(),
        );
    }
    ann.insert("io.runv.hyperctl.image".into(), image.name.clone());
    spec.set_annotations(Some(ann));
    let path = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).expect("a runtime spec serialises");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default())
}

fn discard(containers: &Containers, name: &str) {
    if let Err(e) = containers.remove(name) {
        tracing::warn!(container = name, error = %format!("{e:#}"), "could not remove a failed run's directory");
    }
}

fn bundle_args(containers: &Containers, name: &str) -> Vec<std::ffi::OsString> {
    vec!["--bundle".into(), containers.bundle(name).into_os_string()]
}

/// Spawns `runv run`, with the forwarded signals blocked here and taken by a thread.
fn spawn_foreground(
    runv: &Runv,
    mut cmd: std::process::Command,
    on_winch: impl Fn() + Send + 'static,
) -> Result<Child> {
    let set = crate::signals::block().context("blocking signals")?;
    let child = cmd
        .spawn()
        .with_context(|| format!("running {}", runv.bin.display()))?;
    crate::signals::spawn_forwarder(set, Pid::from_raw(child.id() as i32), on_winch);
    Ok(child)
}

fn run_plain(runv: &Runv, containers: &Containers, name: &str, interactive: bool) -> Result<i32> {
    let mut cmd = runv.command(
        ["run".into()]
            .into_iter()
            .chain(bundle_args(containers, name))
            .chain([name.into()])
            .collect::<Vec<std::ffi::OsString>>(),
    );
    cmd.stdin(if interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    let mut child = spawn_foreground(runv, cmd, || {})?;
    let status = child.wait().context("waiting for runv")?;
    Ok(exit_code(status))
}

fn run_tty(runv: &Runv, containers: &Containers, name: &str, interactive: bool) -> Result<i32> {
    let sock = containers.console_socket(name);
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("console socket {}", sock.display()))?;
    let mut args: Vec<std::ffi::OsString> =
        vec!["run".into(), "--console-socket".into(), sock.clone().into()];
    args.extend(bundle_args(containers, name));
    args.push(name.into());
    let mut cmd = runv.command(args);
    cmd.stdin(Stdio::null());
    // The master is not known yet when the forwarder starts; the winch handler reads it
    // from this slot.
    let slot: std::sync::Arc<std::sync::Mutex<Option<File>>> = Default::default();
    let winch_slot = slot.clone();
    let mut child = spawn_foreground(runv, cmd, move || {
        if let Some(m) = winch_slot.lock().unwrap().as_ref() {
            tty::copy_winsize(std::io::stdin().as_fd(), m.as_fd());
        }
    })?;
    let handover = tty::receive_master(&listener, &sock, &mut child);
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    let master = match handover {
        Ok(Handover::Master(m)) => File::from(m),
        Ok(Handover::Exited(status)) => return Ok(exit_code(status)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    tty::copy_winsize(std::io::stdin().as_fd(), master.as_fd());
    *slot.lock().unwrap() = Some(master.try_clone().context("duplicating the pty master")?);
    let raw = RawMode::enter()?;
    if interactive {
        let to_master = master.try_clone().context("duplicating the pty master")?;
        // Blocked in read(stdin) until input comes; it ends with the process.
        std::thread::spawn(move || {
            let stdin = File::from(
                std::io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .expect("stdin"),
            );
            tty::pump(stdin, to_master);
        });
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tty::pump(master, std::io::stdout());
        let _ = done_tx.send(());
    });
    let status = child.wait().context("waiting for runv");
    // runv has exited, so has the container: take what is still in the PTY, briefly.
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    *slot.lock().unwrap() = None;
    drop(raw);
    Ok(exit_code(status?))
}

fn run_detached(runv: &Runv, containers: &Containers, name: &str) -> Result<()> {
    let log_path = containers.log(name);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("creating {}", log_path.display()));
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            discard(containers, name);
            return Err(e);
        }
    };
    let mut args: Vec<std::ffi::OsString> = vec!["run".into(), "--detach".into()];
    args.extend(bundle_args(containers, name));
    args.push(name.into());
    let status = runv
        .command(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log fd")?)
        .stderr(log)
        .status()
        .with_context(|| format!("running {}", runv.bin.display()));
    let ok = matches!(&status, Ok(s) if s.success());
    if !ok {
        // runv's own error went to the log (the container's stdio is runv's): show it,
        // then leave nothing behind.
        let mut text = String::new();
        let _ = File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
        let _ = runv.delete(name, true);
        discard(containers, name);
        let status = status?;
        bail!(
            "runv run --detach {name} failed ({status}): {}",
            text.trim()
        );
    }
    println!("{name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(a: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["hyperctl", "run"].iter().chain(a)).unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        *r
    }

    #[test]
    fn refused_combinations() {
        for bad in [&["-d", "-t", "x"][..], &["-d", "-i", "x"]] {
            let e = check_combination(&args(bad)).unwrap_err().to_string();
            assert!(e.starts_with("-d cannot be combined"), "{e}");
        }
        check_combination(&args(&["-d", "x"])).unwrap();
        check_combination(&args(&["-d", "--rm", "x"])).unwrap();
        check_combination(&args(&["--rm", "-ti", "x"])).unwrap();
    }

    #[test]
    fn overrides_from_flags() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().display().to_string();
        let a = args(&[
            "-e",
            "A=1",
            "-w",
            "/w",
            "-u",
            "1:2",
            "-t",
            "--name",
            "web.1",
            "-v",
            &format!("{host}:/data:ro"),
            "--entrypoint",
            "/bin/echo",
            "img",
            "x",
            "y",
        ]);
        let ov = overrides(&a).unwrap();
        assert_eq!(ov.args, ["x", "y"]);
        assert_eq!(ov.entrypoint, Some(vec!["/bin/echo".to_string()]));
        assert_eq!(ov.env, ["A=1"]);
        assert_eq!(ov.cwd.as_deref(), Some("/w"));
        assert_eq!(ov.user.as_deref(), Some("1:2"));
        assert!(ov.terminal);
        assert_eq!(ov.hostname.as_deref(), Some("web.1"));
        assert_eq!(ov.mounts.len(), 1);
        assert!(ov.mounts[0].readonly);
        // An underscore is fine in a name but not in a hostname.
        assert_eq!(
            overrides(&args(&["--name", "a_b", "img"]))
                .unwrap()
                .hostname,
            None
        );
    }

    #[test]
    fn bad_volumes_name_the_flag() {
        for (v, want) in [
            ("relative:/x", "-v relative:/x"),
            ("/a:/b:rx", "-v /a:/b:rx"),
            ("/a", "-v /a"),
            ("/definitely/not/here:/x", "/definitely/not/here"),
        ] {
            let e = format!("{:#}", overrides(&args(&["-v", v, "img"])).unwrap_err());
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn unknown_image_says_where_it_looked() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("images")).unwrap();
        let e = format!("{:#}", resolve_image(&store, "nosuch:1").unwrap_err());
        assert!(
            e.contains("\"nosuch:1\"") && e.contains("hyperctl load"),
            "{e}"
        );
        let bogus = t.path().join("bogus.tar");
        std::fs::write(&bogus, b"not a tar").unwrap();
        let e = format!(
            "{:#}",
            resolve_image(&store, bogus.to_str().unwrap()).unwrap_err()
        );
        assert!(e.contains("loading") && e.contains("bogus.tar"), "{e}");
        assert!(store.images().unwrap().is_empty());
    }
}

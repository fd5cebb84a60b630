//! The kernel command line: a default tuned for a console-on-serial micro-VM, replaced by the
//! user's line when given, extended by `--cmdline-append` words, with the VMM's own device
//! entries always appended.
//!
//! This is the one definition of runv's guest kernel command line: runv passes only its
//! extra words (`--cmdline-append`), and scripts that boot the same kernel under QEMU ask
//! `runv-vmm --print-cmdline` for it.

use super::Error;
use crate::memory::CMDLINE_MAX_SIZE;
use linux_loader::cmdline::Cmdline;

/// Used when `--cmdline` is not given. `reboot=k` resets through the i8042 the VMM emulates,
/// `panic=1` turns a panic into a reset after pvpanic has reported it, `pci=off` because
/// every device is virtio-mmio, `tsc=reliable` skips the clocksource watchdog.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable quiet";

/// The line before the VMM's device entries: `user` (or the default) with the `append`
/// words added to the kernel's part (before a ` -- ` that starts init's arguments).
pub fn base_cmdline(user: Option<&str>, append: &[String]) -> String {
    let base = user.unwrap_or(DEFAULT_CMDLINE).trim();
    let (kernel_part, init_part) = match base.split_once(" -- ") {
        Some((k, i)) => (k.trim(), Some(i.trim())),
        None => (base, None),
    };
    let mut words: Vec<&str> = Vec::new();
    if !kernel_part.is_empty() {
        words.push(kernel_part);
    }
    words.extend(append.iter().map(|a| a.trim()).filter(|a| !a.is_empty()));
    let mut line = words.join(" ");
    if let Some(init) = init_part {
        line.push_str(" -- ");
        line.push_str(init);
    }
    line
}

/// Builds the final command line: `user` (or the default) followed by the VMM's device
/// entries (`virtio_mmio.device=...` once devices exist). Fails if it does not fit the
/// x86 COMMAND_LINE_SIZE or contains bytes the kernel cannot take.
pub fn build_cmdline(user: Option<&str>, vmm_entries: &[String]) -> Result<Cmdline, Error> {
    let base = user.unwrap_or(DEFAULT_CMDLINE).trim();
    let err = |reason: String| Error::Cmdline {
        cmdline: base.to_string(),
        reason,
    };
    let mut cmdline =
        Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| err(format!("cannot allocate: {e}")))?;
    if !base.is_empty() {
        // Cmdline refers to the init arguments after "--" separately; keep them together.
        let (kernel_part, init_part) = match base.split_once(" -- ") {
            Some((k, i)) => (k.trim(), Some(i.trim())),
            None => (base, None),
        };
        if !kernel_part.is_empty() {
            cmdline
                .insert_str(kernel_part)
                .map_err(|e| err(e.to_string()))?;
        }
        for entry in vmm_entries {
            cmdline.insert_str(entry).map_err(|e| err(e.to_string()))?;
        }
        if let Some(init) = init_part {
            cmdline
                .insert_init_args(init)
                .map_err(|e| err(e.to_string()))?;
        }
    } else {
        for entry in vmm_entries {
            cmdline.insert_str(entry).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn default_line_is_used_when_none_is_given() {
        assert_eq!(s(&build_cmdline(None, &[]).unwrap()), DEFAULT_CMDLINE);
    }

    #[test]
    fn user_line_replaces_default_and_vmm_entries_are_appended() {
        let c = build_cmdline(
            Some("console=ttyS0 init=/init"),
            &["virtio_mmio.device=4K@0xd0000000:5".to_string()],
        )
        .unwrap();
        assert_eq!(
            s(&c),
            "console=ttyS0 init=/init virtio_mmio.device=4K@0xd0000000:5"
        );
    }

    #[test]
    fn init_arguments_stay_last() {
        let c = build_cmdline(Some("quiet -- marker 1"), &["x=1".to_string()]).unwrap();
        assert_eq!(s(&c), "quiet x=1 -- marker 1");
    }

    #[test]
    fn appended_words_follow_the_base_and_precede_init_arguments() {
        assert_eq!(base_cmdline(None, &[]), DEFAULT_CMDLINE);
        assert_eq!(
            base_cmdline(None, &["runv.test=reboot".into()]),
            format!("{DEFAULT_CMDLINE} runv.test=reboot")
        );
        assert_eq!(
            base_cmdline(
                Some("quiet -- marker 1"),
                &["a=1".into(), " ".into(), "b".into()]
            ),
            "quiet a=1 b -- marker 1"
        );
        assert_eq!(base_cmdline(Some(""), &["x".into()]), "x");
        let c = build_cmdline(Some(&base_cmdline(None, &["y=2".into()])), &["v=1".into()]);
        assert_eq!(s(&c.unwrap()), format!("{DEFAULT_CMDLINE} y=2 v=1"));
    }

    #[test]
    fn too_long_line_is_rejected_with_the_line() {
        let long = "a".repeat(CMDLINE_MAX_SIZE + 1);
        let e = build_cmdline(Some(&long), &[]).unwrap_err();
        assert!(e.to_string().contains("aaaa"), "{e}");
    }

    #[test]
    fn non_printable_bytes_are_rejected() {
        assert!(build_cmdline(Some("console=ttyS0\u{7}"), &[]).is_err());
    }
}

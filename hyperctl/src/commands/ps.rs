//! `hyperctl ps [-a]`: containers with their status from `runv state`.

use std::path::Path;

use anyhow::Result;

use crate::containers::{Containers, Record};
use crate::runv::{Runv, Status};

pub fn ps(root: &Path, all: bool) -> Result<()> {
    let runv = Runv::new(root)?;
    let now = chrono::Utc::now();
    let mut rows = vec![vec![
        "NAME".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "STATUS".into(),
        "CREATED".into(),
    ]];
    for rec in Containers::new(root).list()? {
        let state = if rec.exit_code.is_some() {
            None
        } else {
            runv.status(&rec.name)?
        };
        let (status, live) = describe(&rec, &state);
        if !all && !live {
            continue;
        }
        rows.push(vec![
            rec.name.clone(),
            rec.image.clone(),
            command_cell(&rec.command),
            status,
            super::age(&rec.created, now),
        ]);
    }
    super::print_table(&rows);
    Ok(())
}

/// The status shown and whether the container counts as live (shown without -a).
pub fn describe(rec: &Record, state: &Status) -> (String, bool) {
    if let Some(code) = rec.exit_code {
        return (format!("Exited ({code})"), false);
    }
    match state.as_deref() {
        Some("running") => ("Running".into(), true),
        Some("created") => ("Created".into(), true),
        Some("paused") => ("Paused".into(), true),
        Some("stopped") => ("Exited".into(), false),
        Some(other) => (other.to_string(), false),
        None => ("Gone (no runv state)".into(), false),
    }
}

fn command_cell(args: &[String]) -> String {
    let s = args.join(" ");
    if s.chars().count() > 30 {
        format!("\"{}…\"", s.chars().take(29).collect::<String>())
    } else {
        format!("\"{s}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(exit_code: Option<i32>) -> Record {
        Record {
            name: "n".into(),
            image: "i".into(),
            manifest: "m".into(),
            command: vec![],
            created: String::new(),
            detached: true,
            exit_code,
        }
    }

    #[test]
    fn statuses() {
        let s = |st: Option<&str>| describe(&rec(None), &st.map(String::from));
        assert_eq!(s(Some("running")), ("Running".into(), true));
        assert_eq!(s(Some("created")), ("Created".into(), true));
        assert_eq!(s(Some("stopped")), ("Exited".into(), false));
        assert_eq!(s(None), ("Gone (no runv state)".into(), false));
        assert_eq!(describe(&rec(Some(3)), &None), ("Exited (3)".into(), false));
    }

    #[test]
    fn long_commands_are_cut() {
        assert_eq!(
            command_cell(&["sh".into(), "-c".into(), "x".into()]),
            "\"sh -c x\""
        );
        let long = command_cell(&["a".repeat(40)]);
        assert_eq!(long.chars().count(), 32);
        assert!(long.ends_with("…\""));
    }
}

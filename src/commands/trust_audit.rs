//! `renewd trust-audit [--json] [PATH...]`: every trust anchor of the system's stores and
//! of `[trust] paths` (or of the paths named), with what is wrong with it. Reads files only.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{load, CommandError, Outcome};
use crate::trust::{AuditedAnchor, Cache, Report};

/// What `renewd trust-audit` was asked.
#[derive(Debug, Clone, Default)]
pub struct TrustAuditArgs {
    /// Machine-readable output.
    pub json: bool,
    /// Bundles or directories to audit instead of the system stores and `[trust] paths`.
    pub paths: Vec<PathBuf>,
}

/// Audits and prints; exit 0 when nothing is flagged and everything was read, else 1.
pub async fn trust_audit(
    arg: Option<&Path>,
    args: TrustAuditArgs,
) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    let explicit: Vec<PathBuf> = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let report = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        let inv = crate::status::inventory_offline(&cfg, now);
        crate::inventory::trust::audit(&cfg, &inv, &explicit, &mut Cache::default(), now)
    })
    .await
    .map_err(CommandError::failed)?;
    if args.json {
        let s = serde_json::to_string_pretty(&report).map_err(CommandError::failed)?;
        println!("{s}");
    } else {
        print!("{}", render(&report));
    }
    if report.flagged > 0 || !report.errors.is_empty() {
        Ok(Outcome::CertificateFailed)
    } else {
        Ok(Outcome::Success)
    }
}

/// The human report: one line an anchor (flagged ones followed by their fingerprint and
/// why), then what could not be read and a summary.
fn render(report: &Report) -> String {
    let header = [
        "STATUS",
        "NOT AFTER",
        "KEY",
        "SIGNATURE",
        "SUBJECT",
        "WHERE",
    ];
    let rows: Vec<[String; 6]> = report.anchors.iter().map(row).collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = crate::text::table_line(&header, &widths);
    for (r, a) in rows.iter().zip(&report.anchors) {
        out.push_str(&crate::text::table_line(r, &widths));
        if !a.flags.is_empty() {
            out.push_str(&format!(
                "    {}: {}\n",
                a.fingerprint,
                escape(&a.reasons.join("; "))
            ));
            if let Some(k) = &a.acknowledged {
                out.push_str(&format!(
                    "    acknowledged by {} until {}{}: {}\n",
                    escape(&k.owner),
                    k.review_by,
                    if k.overdue { " (review overdue)" } else { "" },
                    escape(&k.reason)
                ));
            }
        }
    }
    for e in &report.errors {
        out.push_str(&format!("cannot read {}\n", escape(e)));
    }
    let paths: Vec<String> = report
        .sources
        .iter()
        .map(|s| escape(&s.path.display().to_string()))
        .collect();
    out.push_str(&format!(
        "{} anchor(s) in {}; {} flagged\n",
        report.anchors.len(),
        if paths.is_empty() {
            "no path".to_string()
        } else {
            paths.join(", ")
        },
        report.flagged
    ));
    out
}

/// One anchor's cells.
fn row(a: &AuditedAnchor) -> [String; 6] {
    let flags = a
        .flags
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let status = match (&a.acknowledged, a.flags.is_empty()) {
        (_, true) => "ok".to_string(),
        (Some(_), false) if !a.flagged => format!("ack:{flags}"),
        _ => flags,
    };
    let not_after = time::OffsetDateTime::from_unix_timestamp(a.not_after)
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_else(|_| a.not_after.to_string());
    let mut place = if a.file == a.path {
        format!("{}#{}", a.file.display(), a.block)
    } else {
        a.file.display().to_string()
    };
    // A certificate repeated in the path is one row.
    if a.copies > 1 {
        place.push_str(&format!(" (x{})", a.copies));
    }
    [
        status,
        not_after,
        a.key.clone(),
        escape(&a.signature_algorithm),
        escape(&a.subject),
        escape(&place),
    ]
}

/// Subjects, paths and owners come from outside: no control character reaches the terminal.
fn escape(s: &str) -> String {
    crate::text::escape(s).into_owned()
}

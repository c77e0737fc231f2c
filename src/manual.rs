//! `renewd manpage DIR`: the section-8 manual pages, written by clap_mangen from the command
//! line itself so they never drift from it: `renewd.8` and one `renewd-SUBCOMMAND.8` per
//! visible subcommand (the pages `renewd.8` names), each ending with a SEE ALSO section that
//! points at the others and at `renewd.toml(5)`, the configuration reference shipped from
//! `packaging/man/`. The packages gzip and install them.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Command;

/// Writes `renewd.8` and `renewd-NAME.8` for every subcommand that is not hidden (and not
/// `help`) into `dir`, which must exist. Returns the paths written.
///
/// Errors: the first file that cannot be created or written, with its path.
pub(crate) fn write_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    // `help` (clap's, or renewd's own) needs no page, and renewd(8) names none for it.
    let mut cmd = cmd.disable_help_subcommand(true);
    if cmd.find_subcommand("help").is_some() {
        cmd = cmd.mut_subcommand("help", |h| h.hide(true));
    }
    cmd.build();
    let subcommands: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    let names: Vec<String> = subcommands
        .iter()
        .map(|s| format!("renewd-{}", s.get_name()))
        .collect();

    let mut written = vec![write_page(dir, "renewd", cmd.clone(), &see_also(&names))?];
    // After `build`, clap names each subcommand `renewd-NAME` for display (clap_mangen's NAME
    // section) and `renewd NAME` in its synopsis.
    for (sub, name) in subcommands.into_iter().zip(&names) {
        written.push(write_page(dir, name, sub, &see_also(&[]))?);
    }
    Ok(written)
}

/// The SEE ALSO section's body as roff: the main page lists its subcommands' `pages`, a
/// subcommand's page (no `pages`) points back at `renewd(8)`; both name the configuration
/// reference and systemd's tools.
fn see_also(pages: &[String]) -> String {
    let mut refs: Vec<String> = pages
        .iter()
        .map(|p| format!(".BR {} (8)", p.replace('-', "\\-")))
        .collect();
    if refs.is_empty() {
        refs.push(".BR renewd (8)".into());
    }
    refs.push(".BR renewd.toml (5)".into());
    refs.push(".BR systemctl (1)".into());
    refs.push(".BR journalctl (1)".into());
    let n = refs.len();
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            if i + 1 < n {
                format!("{r},\n")
            } else {
                format!("{r}\n")
            }
        })
        .collect()
}

fn write_page(dir: &Path, name: &str, cmd: Command, see_also: &str) -> io::Result<PathBuf> {
    let path = dir.join(format!("{name}.8"));
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(name.to_uppercase())
        .section("8")
        .manual("System Administration")
        .source(format!("renewd {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(with_path)?;
    out.extend_from_slice(b".SH \"SEE ALSO\"\n");
    out.extend_from_slice(see_also.as_bytes());
    let mut file = std::fs::File::create(&path).map_err(with_path)?;
    file.write_all(&out).map_err(with_path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_the_main_page_names_is_written() {
        let cmd = Command::new("renewd")
            .subcommand(Command::new("help").about("renewd's own help"))
            .subcommand(Command::new("check").about("validates"))
            .subcommand(Command::new("manpage").hide(true))
            .subcommand(Command::new("status").about("shows"));
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(cmd, dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["renewd.8", "renewd-check.8", "renewd-status.8"]);
        let main = std::fs::read_to_string(dir.path().join("renewd.8")).unwrap();
        // clap_mangen names the subcommand pages; every one it names exists.
        for page in ["renewd\\-check(8)", "renewd\\-status(8)"] {
            assert!(main.contains(page), "renewd.8 lacks {page}");
        }
        assert!(
            !main.contains("renewd\\-manpage"),
            "a hidden subcommand got a page"
        );
        assert!(
            !main.contains("renewd\\-help"),
            "renewd.8 names a help page"
        );
        assert!(main.contains(".SH \"SEE ALSO\""));
        assert!(main.contains(".BR renewd.toml (5)"));
        let check = std::fs::read_to_string(dir.path().join("renewd-check.8")).unwrap();
        assert!(
            check.contains(".TH RENEWD-CHECK 8"),
            "{}",
            &check[..200.min(check.len())]
        );
        assert!(check.contains(".BR renewd (8)"));
    }
}

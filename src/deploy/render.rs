//! The contents of each kind of deployed file, cut from the key and the chain.

use std::path::PathBuf;

use super::Material;
use crate::config::{FileKind, FileSet};

/// The contents of each configured file: cert = leaf; chain = intermediates; fullchain =
/// leaf + intermediates; key = key; combined = key + fullchain (the order HAProxy reads);
/// pkcs12 = the archive built beforehand ([`super::pkcs12`]; empty when there is none,
/// which [`super::stage`] refuses).
pub(crate) fn render(files: &FileSet, m: &Material) -> Vec<(FileKind, PathBuf, Vec<u8>)> {
    let blocks: Vec<String> = m.chain_pem.iter().map(|b| with_newline(b)).collect();
    let key = with_newline(&m.key_pem);
    let leaf = blocks.first().cloned().unwrap_or_default();
    let intermediates = blocks.get(1..).unwrap_or_default().concat();
    let fullchain = blocks.concat();
    files
        .iter()
        .map(|(kind, path)| {
            let text = match kind {
                FileKind::Cert => leaf.clone(),
                FileKind::Chain => intermediates.clone(),
                FileKind::Fullchain => fullchain.clone(),
                FileKind::Key => key.clone(),
                FileKind::Combined => format!("{key}{fullchain}"),
                FileKind::Pkcs12 => {
                    let der = m.pkcs12.clone().unwrap_or_default();
                    return (kind, path.to_path_buf(), der);
                }
            };
            (kind, path.to_path_buf(), text.into_bytes())
        })
        .collect()
}

/// Concatenated PEM blocks must each start on a line of their own.
fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

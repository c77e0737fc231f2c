//! `renewd completions SHELL`: clap_complete's script for the visible command line (hidden
//! subcommands such as `manpage` left out), and, for bash, zsh and fish, completion of
//! certificate names for `status`, `renew` and `revoke`. The names are asked of
//! `renewd status --names` when completing, so they follow the configuration (the one of
//! `RENEWD_CONFIG` or the default path).

use clap::Command;
use clap_complete::Shell;

/// Subcommands whose positional arguments are certificate names.
const TAKE_NAMES: [&str; 3] = ["status", "renew", "revoke"];

/// How clap_complete's zsh script starts the specs of those arguments (`status NAME...`,
/// `renew NAME...`, `revoke NAME`), by their ids in `main.rs`.
const ZSH_NAME_ARGS: [&str; 3] = ["'*::certs -- ", "'*::names -- ", "':name:"];

/// The completion script for `shell`, as text.
pub(crate) fn script(shell: Shell, cmd: Command) -> String {
    let mut cmd = visible(cmd);
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "renewd", &mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => text.push_str(BASH_NAMES),
        Shell::Zsh => {
            // clap_complete offers files for a positional without a value hint; the names
            // of `status`, `renew` and `revoke` are certificates instead.
            text = text
                .lines()
                .map(|line| {
                    let l = line.trim_start();
                    if ZSH_NAME_ARGS.iter().any(|p| l.starts_with(p)) {
                        line.replace(":_default'", ":_renewd_certificate_names'")
                    } else {
                        line.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            text.push('\n');
            text.push_str(ZSH_NAMES);
        }
        Shell::Fish => {
            text.push_str(&format!(
                "complete -c renewd -n \"__fish_seen_subcommand_from {}\" -f -a \
                 \"(renewd status --names 2>/dev/null)\"\n",
                TAKE_NAMES.join(" ")
            ));
        }
        _ => {}
    }
    text
}

/// `cmd` without its hidden subcommands (clap_complete lists them).
fn visible(cmd: Command) -> Command {
    Command::new("renewd")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// Wraps clap_complete's `_renewd`: after a subcommand that takes certificate names, a word
/// that is not an option completes to a configured name.
const BASH_NAMES: &str = r#"
_renewd_with_names() {
    _renewd "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" word skip=
    [[ "$cur" == -* ]] && return 0
    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        if [[ -n "$skip" ]]; then skip=; continue; fi
        case "$word" in
            status|renew|revoke)
                COMPREPLY=($(compgen -W "$(renewd status --names 2>/dev/null)" -- "$cur"))
                return 0;;
            --config|--ca|--reason) skip=1;;
            -*) ;;
            *) return 0;;
        esac
    done
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _renewd_with_names -o nosort -o bashdefault -o default renewd
else
    complete -F _renewd_with_names -o bashdefault -o default renewd
fi
"#;

const ZSH_NAMES: &str = r#"
(( $+functions[_renewd_certificate_names] )) ||
_renewd_certificate_names() {
    local -a names
    names=(${(f)"$(renewd status --names 2>/dev/null)"})
    _describe -t certificates 'certificate' names
}
"#;

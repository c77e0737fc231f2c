//! The daemon's answers to the control socket's requests ([`crate::control`]): `status`
//! from the table (the records read on a blocking thread), `renew` and `revoke` as batches
//! on spawned tasks, answered when they end.

use std::time::SystemTime;

use tokio::sync::oneshot;

use super::{Daemon, Event};
use crate::config::CertConfig;
use crate::control::{Request, Response};
use crate::renew::BatchReport;
use crate::requests::{results, revoked_results, select};
use crate::status::{self, Evaluation};

impl Daemon {
    pub(super) fn on_control(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        match req {
            Request::Status { names } => {
                let unknown: Vec<&str> = names
                    .iter()
                    .filter(|n| self.table.get(n).is_none())
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() {
                    let _ = reply.send(Response::Error {
                        message: format!("no certificate named {}", unknown.join(", ")),
                    });
                    return;
                }
                // The records are read on a blocking thread, not on the loop.
                let rows: Vec<(std::sync::Arc<CertConfig>, Evaluation, bool)> = self
                    .table
                    .entries()
                    .filter(|e| names.is_empty() || names.contains(&e.cfg.name))
                    .map(|e| (e.cfg.clone(), e.eval.clone(), e.renewing))
                    .collect();
                let renewer = self.renewer.clone();
                tokio::spawn(async move {
                    let job = move || {
                        rows.iter()
                            .map(|(c, ev, renewing)| {
                                let mut row =
                                    status::row(c, &renewer.record(&c.name), ev, *renewing);
                                row.warnings.extend(renewer.state_problem().map(|p| {
                                    format!(
                                        "the state directory is not writable ({p}); what \
                                         happened is kept in memory only"
                                    )
                                }));
                                row
                            })
                            .collect()
                    };
                    let rsp = match tokio::task::spawn_blocking(job).await {
                        Ok(certificates) => Response::Status { certificates },
                        Err(e) => Response::Error {
                            message: format!("cannot read the state records: {e}"),
                        },
                    };
                    let _ = reply.send(rsp);
                });
            }
            Request::Renew {
                names,
                all,
                force,
                dry_run,
            } => {
                let selected = match select(&self.config, &names, all) {
                    Ok(s) => s.into_iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    Err(e) => {
                        let _ = reply.send(Response::Error {
                            message: e.to_string(),
                        });
                        return;
                    }
                };
                let (skipped, run) = self.table.sort_request(selected, force, SystemTime::now());
                self.start_batch(run, dry_run, Some((reply, skipped)));
            }
            Request::Revoke { name, reason } => self.revoke(name, reason, reply),
        }
    }

    /// A revoke request: revoke at the CA, then the replacement goes through a normal batch
    /// (journal, reload, verify) on a spawned task, like a forced renewal.
    fn revoke(&mut self, name: String, reason: Option<String>, reply: oneshot::Sender<Response>) {
        let cert = match self.table.start_revoke(&name) {
            Ok(cert) => cert,
            Err(refused) => {
                let _ = reply.send(Response::Error {
                    message: refused.to_string(),
                });
                return;
            }
        };
        self.spawn_batch(move |renewer, cas| async move {
            let (report, results) = match renewer.revoke(&cert, &cas, reason.as_deref()).await {
                Ok(serial) => {
                    let report = renewer.run_batch(vec![cert], &cas, false).await;
                    let results = revoked_results(&serial, &report);
                    (report, results)
                }
                Err(message) => {
                    let report = BatchReport {
                        certificates: vec![crate::renew::CertOutcome {
                            name: cert.name.clone(),
                            result: Err(crate::renew::CertFailure::Revocation(
                                std::sync::Arc::new(message),
                            )),
                        }],
                        reloads: Vec::new(),
                    };
                    let results = results(Vec::new(), &report, false);
                    (report, results)
                }
            };
            let _ = reply.send(Response::Renew { results });
            Event::BatchDone {
                report,
                dry_run: false,
                reply: None,
            }
        });
    }
}

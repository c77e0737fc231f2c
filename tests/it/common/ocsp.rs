//! A real certificate authority and OCSP responder for the revocation tests, all OpenSSL:
//! [`OpensslCa`] is an `openssl ca` directory (index.txt, serial, crlnumber) that issues
//! leaves naming an OCSP URL and/or a CRL URL, revokes them and signs CRLs; [`Responder`]
//! is `openssl ocsp -index … -port` answering for such an index (or for any issuer whose
//! certificate and key a test has, e.g. Pebble's intermediate). Processes die on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// Runs `openssl ARGS` in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An `openssl ca` in a directory of its own: an ECDSA P-256 root that signs leaves
/// directly (no intermediate), tracking them in `index.txt`.
pub struct OpensslCa {
    pub dir: PathBuf,
}

impl OpensslCa {
    /// Creates the CA under `dir` (which must exist): key, self-signed certificate
    /// (`ca.pem`), `ca.cnf`, an empty index.
    pub fn new(dir: &Path) -> OpensslCa {
        fs::create_dir_all(dir.join("newcerts")).expect("mkdir");
        fs::write(dir.join("index.txt"), "").expect("index");
        fs::write(dir.join("serial"), "1000\n").expect("serial");
        fs::write(dir.join("crlnumber"), "01\n").expect("crlnumber");
        let cnf = format!(
            r#"[ca]
default_ca = ca_default
[ca_default]
dir = {d}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 1
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
"#,
            d = dir.display()
        );
        fs::write(dir.join("ca.cnf"), cnf).expect("ca.cnf");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=renewd revocation test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        OpensslCa {
            dir: dir.to_path_buf(),
        }
    }

    /// Issues a leaf for `name` naming `ocsp` (AIA) and `crl` (distribution point) when
    /// given; writes `NAME.pem` (the leaf, then the CA: the chain in the file) and
    /// `NAME.key`, and returns the chain file's path.
    pub fn issue(&self, name: &str, ocsp: Option<&str>, crl: Option<&str>) -> PathBuf {
        let mut ext = format!("subjectAltName=DNS:{name}\n");
        if let Some(u) = ocsp {
            ext.push_str(&format!("authorityInfoAccess=OCSP;URI:{u}\n"));
        }
        if let Some(u) = crl {
            ext.push_str(&format!("crlDistributionPoints=URI:{u}\n"));
        }
        self.issue_with(name, &ext)
    }

    /// Issues a leaf for `name` naming every URL of `ocsp` (AIA, in order) and of `crl`
    /// (one distribution point with them all); files as [`OpensslCa::issue`].
    pub fn issue_naming(&self, name: &str, ocsp: &[&str], crl: &[&str]) -> PathBuf {
        let mut ext = format!("subjectAltName=DNS:{name}\n");
        if !ocsp.is_empty() {
            let uris: Vec<String> = ocsp.iter().map(|u| format!("OCSP;URI:{u}")).collect();
            ext.push_str(&format!("authorityInfoAccess={}\n", uris.join(",")));
        }
        if !crl.is_empty() {
            let uris: Vec<String> = crl.iter().map(|u| format!("URI:{u}")).collect();
            ext.push_str(&format!("crlDistributionPoints={}\n", uris.join(",")));
        }
        self.issue_with(name, &ext)
    }

    /// A delegated OCSP responder certificate (extendedKeyUsage OCSPSigning, RFC 6960
    /// §4.2.2.2) named `name`: `NAME.leaf.pem` and `NAME.key`.
    pub fn issue_responder(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue_with(name, "extendedKeyUsage=OCSPSigning\n");
        (
            self.dir.join(format!("{name}.leaf.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// Issues a leaf for `name` with the extension lines `extra`; writes `NAME.leaf.pem`,
    /// `NAME.pem` (leaf then CA) and `NAME.key`; returns the chain file.
    fn issue_with(&self, name: &str, extra: &str) -> PathBuf {
        let d = &self.dir;
        let ext = format!(
            "[leaf]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extra}"
        );
        fs::write(d.join(format!("{name}.ext")), ext).expect("ext");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-notext",
                "-in",
                &format!("{name}.csr"),
                "-out",
                &format!("{name}.leaf.pem"),
                "-extfile",
                &format!("{name}.ext"),
                "-extensions",
                "leaf",
            ],
        );
        let chain = fs::read_to_string(d.join(format!("{name}.leaf.pem"))).expect("leaf")
            + &fs::read_to_string(d.join("ca.pem")).expect("ca");
        let path = d.join(format!("{name}.pem"));
        fs::write(&path, chain).expect("chain");
        path
    }

    /// Revokes the leaf of `name` (reason keyCompromise) in the index.
    pub fn revoke(&self, name: &str) {
        openssl(
            &self.dir,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-revoke",
                &format!("{name}.leaf.pem"),
                "-crl_reason",
                "keyCompromise",
            ],
        );
    }

    /// Signs a CRL of the index (valid a day) and writes it, DER, to `out`.
    pub fn write_crl(&self, out: &Path) {
        openssl(
            &self.dir,
            &["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"],
        );
        openssl(
            &self.dir,
            &[
                "crl",
                "-in",
                "crl.pem",
                "-outform",
                "DER",
                "-out",
                &out.display().to_string(),
            ],
        );
    }

    /// A responder for this CA's index on `port`, signing with the CA's own key.
    pub fn responder(&self, port: u16) -> Responder {
        let (ca, key) = (self.dir.join("ca.pem"), self.dir.join("ca.key"));
        Responder::start(
            port,
            &self.dir,
            &self.dir.join("index.txt"),
            &ca,
            (&ca, &key),
        )
    }

    /// A responder for this CA's index on `port`, signing with `signer` (certificate, key):
    /// a delegated responder, or one the CA never authorized.
    pub fn responder_signing_with(&self, port: u16, signer: (&Path, &Path)) -> Responder {
        let ca = self.dir.join("ca.pem");
        Responder::start(port, &self.dir, &self.dir.join("index.txt"), &ca, signer)
    }
}

/// `openssl ocsp` as a responder on `port` (all addresses; tests use 127.0.0.1): answers
/// from `index` for the issuer `ca`, signing with `signer` (certificate, key; the
/// certificate is sent in the response), responses valid an hour (`-nmin 60`).
pub struct Responder {
    pub port: u16,
    child: Child,
}

impl Responder {
    /// Starts it and waits (bounded) until the port accepts connections; its output goes
    /// to `dir/ocsp-PORT.log`.
    pub fn start(
        port: u16,
        dir: &Path,
        index: &Path,
        ca: &Path,
        signer: (&Path, &Path),
    ) -> Responder {
        let log = fs::File::create(dir.join(format!("ocsp-{port}.log"))).expect("log");
        let child = Command::new("openssl")
            .args(["ocsp", "-index"])
            .arg(index)
            .args(["-port", &port.to_string(), "-CA"])
            .arg(ca)
            .arg("-rsigner")
            .arg(signer.0)
            .arg("-rkey")
            .arg(signer.1)
            .args(["-nmin", "60", "-ignore_err"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn openssl ocsp");
        // Ready once it says so: a probe connection closed without a request would hang
        // its single-threaded loop (OpenSSL 3.0 waits on it).
        let log_path = dir.join(format!("ocsp-{port}.log"));
        wait_until(Duration::from_secs(10), "openssl ocsp to listen", || {
            fs::read_to_string(&log_path)
                .is_ok_and(|l| l.contains("waiting for OCSP client connections"))
        });
        Responder { port, child }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of an `openssl ca` index for a revoked certificate: serial (hex), expiry and
/// revocation time (`YYMMDDHHMMSSZ`), subject.
pub fn revoked_index_line(serial_hex: &str, expires: &str, revoked: &str, subject: &str) -> String {
    format!(
        "R\t{expires}\t{revoked},keyCompromise\t{}\tunknown\t{subject}\n",
        serial_hex.to_uppercase()
    )
}

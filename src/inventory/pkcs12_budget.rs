//! The key-derivation work a PKCS#12 bundle (RFC 7292) asks for, added up from its DER
//! before any of it is done, so a bundle someone else can write cannot make renewd burn
//! CPU at will.
//!
//! Every password-based key derivation costs its iteration count in hash rounds: the
//! integrity check's (`MacData.iterations`, RFC 7292 §4), each PKCS#12 PBE scheme's
//! (`pkcs-12PbeParams`, RFC 7292 Appendix C), each PBES1 scheme's and each PBKDF2's
//! (RFC 8018 §6.1, §5.2). The walk visits every element of the DER tree, and the content
//! of every OCTET STRING that is itself DER (the AuthenticatedSafe and SafeContents of
//! RFC 7292 §4.1–4.2 sit in OCTET STRINGs). It is bounded in depth and in element count.
//!
//! What it cannot see is the plaintext of an `encryptedData` part: shrouded keys inside
//! one are decrypted by the reader without this count (see [`MAX_ENCRYPTED_PARTS`]).

/// Largest bundle opened, in bytes: a Java truststore of ~150 CA certificates (the JDK's
/// `cacerts`) is about 200 KB; anything larger is not a keystore a service presents.
pub(crate) const MAX_BUNDLE: usize = 512 * 1024;

/// Most key-derivation iterations (all parts and the MAC together) one bundle may ask
/// for. Writers use 2,048 per part (OpenSSL 3) or 10,000 (Java's keytool, renewd's own
/// writer), three parts in all; 2,000,000 leaves room for three parts at OWASP's
/// 600,000 PBKDF2-SHA256 while keeping one hostile bundle to a few seconds of CPU
/// (the reader allows 1,000,000 per part, and any number of parts).
pub(crate) const MAX_ITERATIONS: u64 = 2_000_000;

/// Most encrypted parts (shrouded keys, `encryptedData` contents) one bundle may hold.
/// A keystore has one per private key plus one for its certificates; 16 keys in one
/// keystore is beyond what services present.
pub(crate) const MAX_ENCRYPTED_PARTS: u32 = 16;

/// Deepest nesting walked (a PFX's own structure is about 12 deep).
const MAX_DEPTH: u32 = 32;

/// Most DER elements walked (a 150-certificate truststore has ~20,000).
const MAX_ELEMENTS: u32 = 200_000;

/// `1.2.840.113549.1.5` (PKCS #5), DER content octets.
const PKCS5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05];
/// `1.2.840.113549.1.12.1` (PKCS #12 PBE schemes).
const PKCS12_PBE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01];
/// `1.3.6.1.4.1.11591.4.11` (scrypt, RFC 7914 §7).
const SCRYPT: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x04, 0x0b];

/// PKCS #5 arcs: PBES1 schemes (RFC 8018 Appendix A.3), PBKDF2, PBES2, PBMAC1.
const PBES1_ARCS: &[u8] = &[1, 3, 4, 6, 10, 11];
const PBKDF2_ARC: u8 = 12;
const PBES2_ARC: u8 = 13;
const PBMAC1_ARC: u8 = 14;

/// Why a bundle is refused before any key derivation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WorkRefused {
    #[error("{bytes} bytes, larger than the {} KiB a PKCS#12 keystore needs", MAX_BUNDLE / 1024)]
    TooLarge { bytes: usize },
    #[error(
        "it asks for {iterations} key-derivation iterations, more than the {MAX_ITERATIONS} \
         renewd spends on one bundle"
    )]
    TooMuchWork { iterations: u64 },
    #[error("it holds {parts} encrypted parts, more than the {MAX_ENCRYPTED_PARTS} renewd opens")]
    TooManyParts { parts: u32 },
    #[error("it uses scrypt (RFC 7914), whose memory cost renewd does not spend")]
    Scrypt,
    #[error("it uses an unknown password-based scheme (OID {oid})")]
    UnknownScheme { oid: String },
    #[error("its DER is malformed ({0})")]
    Malformed(&'static str),
}

/// Checks `der`, a whole file claimed to be a PFX, against [`MAX_BUNDLE`],
/// [`MAX_ITERATIONS`] and [`MAX_ENCRYPTED_PARTS`]; refuses scrypt and unknown PKCS #5 /
/// PKCS #12 schemes. Takes time linear in `der.len()` (times [`MAX_DEPTH`] at worst).
pub(crate) fn check(der: &[u8]) -> Result<(), WorkRefused> {
    if der.len() > MAX_BUNDLE {
        return Err(WorkRefused::TooLarge { bytes: der.len() });
    }
    let (pfx, rest) = tlv(der)?;
    if pfx.tag != 0x30 || !rest.is_empty() {
        return Err(WorkRefused::Malformed("not one SEQUENCE"));
    }
    let mut walk = Walk::default();
    walk.mac_iterations(pfx.content)?;
    walk.elements(der, 0)?;
    if walk.parts > MAX_ENCRYPTED_PARTS {
        return Err(WorkRefused::TooManyParts { parts: walk.parts });
    }
    if walk.iterations > MAX_ITERATIONS {
        return Err(WorkRefused::TooMuchWork {
            iterations: walk.iterations,
        });
    }
    Ok(())
}

/// One DER element: its first identifier octet and its content.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// The element at the start of `buf`, and what follows it. Definite lengths only (DER).
fn tlv(buf: &[u8]) -> Result<(Tlv<'_>, &[u8]), WorkRefused> {
    let bad = WorkRefused::Malformed;
    let (&tag, mut rest) = buf.split_first().ok_or(bad("truncated"))?;
    if tag & 0x1f == 0x1f {
        // High tag number: base-128 octets, the last without bit 8.
        let n = rest.iter().take(4).position(|b| b & 0x80 == 0);
        rest = &rest[n.ok_or(bad("tag number too long"))? + 1..];
    }
    let (&first, mut rest) = rest.split_first().ok_or(bad("truncated"))?;
    let len = match first {
        0..=0x7f => usize::from(first),
        0x81..=0x84 => {
            let n = usize::from(first - 0x80);
            let octets = rest.get(..n).ok_or(bad("truncated"))?;
            rest = &rest[n..];
            octets.iter().fold(0usize, |a, &b| a << 8 | usize::from(b))
        }
        _ => return Err(bad("indefinite or over-long length")),
    };
    let content = rest.get(..len).ok_or(bad("length beyond the data"))?;
    Ok((Tlv { tag, content }, &rest[len..]))
}

/// The elements of `buf` in order, or why it is not a run of whole elements.
fn children(mut buf: &[u8]) -> Result<Vec<Tlv<'_>>, WorkRefused> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (t, rest) = tlv(buf)?;
        out.push(t);
        buf = rest;
    }
    Ok(out)
}

/// An INTEGER's value as a count; negative or above `u64` saturates (and so is refused).
fn count(t: Tlv<'_>) -> Result<u64, WorkRefused> {
    if t.tag != 0x02 || t.content.is_empty() {
        return Err(WorkRefused::Malformed("iteration count is not an INTEGER"));
    }
    let digits = match t.content {
        [0, rest @ ..] => rest,
        [b, ..] if b & 0x80 != 0 => return Ok(u64::MAX),
        all => all,
    };
    if digits.len() > 8 {
        return Ok(u64::MAX);
    }
    Ok(digits.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)))
}

/// What the walk has added up so far.
#[derive(Default, Clone, Copy)]
struct Walk {
    iterations: u64,
    parts: u32,
    elements: u32,
}

impl Walk {
    /// `PFX ::= SEQUENCE { version, authSafe, macData MacData OPTIONAL }`;
    /// `MacData ::= SEQUENCE { mac, macSalt, iterations INTEGER DEFAULT 1 }` (RFC 7292 §4).
    fn mac_iterations(&mut self, pfx: &[u8]) -> Result<(), WorkRefused> {
        let Some(&mac_data) = children(pfx)?.get(2) else {
            return Ok(());
        };
        let fields = children(mac_data.content)?;
        let n = match fields.get(2) {
            Some(&t) => count(t)?,
            None => 1,
        };
        self.add(n);
        Ok(())
    }

    fn add(&mut self, iterations: u64) {
        self.iterations = self.iterations.saturating_add(iterations);
    }

    /// Walks every element of `buf`; inside OCTET STRINGs only when they hold whole DER.
    fn elements(&mut self, buf: &[u8], depth: u32) -> Result<(), WorkRefused> {
        if depth > MAX_DEPTH {
            return Err(WorkRefused::Malformed("nested too deep"));
        }
        for t in children(buf)? {
            self.elements += 1;
            if self.elements > MAX_ELEMENTS {
                return Err(WorkRefused::Malformed("too many elements"));
            }
            if t.tag & 0x20 != 0 {
                if t.tag == 0x30 {
                    self.algorithm(t.content)?;
                }
                self.elements(t.content, depth + 1)?;
            } else if t.tag == 0x04 && t.content.first().is_some_and(|b| b & 0x20 != 0) {
                // Encapsulated DER; opaque bytes (salts, ciphertext) are skipped. Ciphertext
                // can start like DER by chance, so its content is walked on trial: malformed
                // inside means opaque; any other refusal (too much work, scrypt, an unknown
                // scheme, too many elements) found in well-formed DER stands.
                let mut trial = *self;
                match trial.elements(t.content, depth + 1) {
                    Ok(()) => *self = trial,
                    Err(WorkRefused::Malformed(why)) if why != "too many elements" => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// `seq`, a SEQUENCE's content: if it is an AlgorithmIdentifier of a password-based
    /// scheme, adds what it costs; refuses scrypt and unknown schemes.
    fn algorithm(&mut self, seq: &[u8]) -> Result<(), WorkRefused> {
        let Ok((oid, params)) = tlv(seq) else {
            return Ok(());
        };
        if oid.tag != 0x06 {
            return Ok(());
        }
        let arc = |prefix: &[u8]| match oid.content.strip_prefix(prefix) {
            Some(&[a]) => Some(a),
            _ => None,
        };
        let unknown = || WorkRefused::UnknownScheme {
            oid: dotted(oid.content),
        };
        if oid.content == SCRYPT {
            return Err(WorkRefused::Scrypt);
        }
        if let Some(a) = arc(PKCS12_PBE) {
            if !(1..=6).contains(&a) {
                return Err(unknown());
            }
            self.parts += 1;
            return self.salt_and_count(params);
        }
        match arc(PKCS5) {
            Some(a) if PBES1_ARCS.contains(&a) => {
                self.parts += 1;
                self.salt_and_count(params)
            }
            // PBKDF2-params ::= SEQUENCE { salt, iterationCount INTEGER, ... } (RFC 8018 A.2)
            Some(PBKDF2_ARC) => self.salt_and_count(params),
            Some(PBES2_ARC) => {
                self.parts += 1;
                let (p, _) = tlv(params)?;
                let (kdf, _) = tlv(p.content)?;
                let (kdf_oid, _) = tlv(kdf.content)?;
                match kdf_oid.content {
                    SCRYPT => Err(WorkRefused::Scrypt),
                    o if o.strip_prefix(PKCS5) == Some(&[PBKDF2_ARC]) => Ok(()),
                    o => Err(WorkRefused::UnknownScheme { oid: dotted(o) }),
                }
            }
            // Its PBKDF2 is counted where the walk meets it.
            Some(PBMAC1_ARC) => Ok(()),
            Some(_) => Err(unknown()),
            None if oid.content.starts_with(PKCS5) => Err(unknown()),
            None => Ok(()),
        }
    }

    /// `params`: `SEQUENCE { salt, iterations INTEGER, ... }`; adds the iterations.
    fn salt_and_count(&mut self, params: &[u8]) -> Result<(), WorkRefused> {
        let (p, _) = tlv(params)?;
        let fields = children(p.content)?;
        let n = fields
            .get(1)
            .ok_or(WorkRefused::Malformed("no iteration count"))?;
        self.add(count(*n)?);
        Ok(())
    }
}

/// An OID's content octets in dotted form, for error messages.
fn dotted(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for &b in content {
        v = v.saturating_mul(128) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.extend([first, v - first * 40]);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    let parts: Vec<String> = arcs.iter().map(u64::to_string).collect();
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn enc(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        match n {
            0..=0x7f => out.push(n as u8),
            0x80..=0xff => out.extend([0x81, n as u8]),
            0x100..=0xffff => out.extend([0x82, (n >> 8) as u8, n as u8]),
            _ => out.extend([0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        enc(0x30, &parts.concat())
    }

    fn oid(content: &[u8]) -> Vec<u8> {
        enc(0x06, content)
    }

    fn int(n: u64) -> Vec<u8> {
        let bytes = n.to_be_bytes();
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(7);
        let mut v = bytes[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        enc(0x02, &v)
    }

    /// PBES2 AlgorithmIdentifier with `kdf` (an AlgorithmIdentifier) and AES-256-CBC.
    fn pbes2(kdf: Vec<u8>) -> Vec<u8> {
        let aes = seq(&[
            oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a]),
            enc(0x04, &[0; 16]),
        ]);
        seq(&[oid(&[PKCS5, &[PBES2_ARC]].concat()), seq(&[kdf, aes])])
    }

    fn pbkdf2(iterations: u64) -> Vec<u8> {
        seq(&[
            oid(&[PKCS5, &[PBKDF2_ARC]].concat()),
            seq(&[enc(0x04, &[7; 8]), int(iterations)]),
        ])
    }

    /// A PFX without MAC whose AuthenticatedSafe holds `parts` encryptedData parts, each
    /// encrypted under `alg`, as multiply.py of the red-team pass builds them.
    fn pfx(parts: usize, alg: &[u8], mac_iterations: Option<u64>) -> Vec<u8> {
        let data = oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
        let encrypted_data = oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06]);
        let part = seq(&[
            encrypted_data,
            enc(
                0xa0,
                &seq(&[
                    int(0),
                    seq(&[data.clone(), alg.to_vec(), enc(0x80, &[0x55; 32])]),
                ]),
            ),
        ]);
        let auth_safe = seq(&vec![part; parts]);
        let mut fields = vec![int(3), seq(&[data, enc(0xa0, &enc(0x04, &auth_safe))])];
        if let Some(n) = mac_iterations {
            let sha256 = oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]);
            let digest = seq(&[seq(&[sha256, enc(0x05, &[])]), enc(0x04, &[0; 32])]);
            fields.push(seq(&[digest, enc(0x04, &[1; 8]), int(n)]));
        }
        seq(&fields)
    }

    #[test]
    fn ordinary_work_passes_and_the_total_is_what_counts() {
        assert_eq!(check(&pfx(2, &pbes2(pbkdf2(10_000)), Some(10_000))), Ok(()));
        assert_eq!(
            check(&pfx(1, &pbes2(pbkdf2(1_000_000)), Some(1_000_000))),
            Ok(())
        );
        let err = check(&pfx(2, &pbes2(pbkdf2(1_000_000)), Some(1))).unwrap_err();
        assert_eq!(
            err,
            WorkRefused::TooMuchWork {
                iterations: 2_000_001
            }
        );
        assert!(
            err.to_string()
                .contains("2000001 key-derivation iterations"),
            "{err}"
        );
        // PKCS#12 PBE (pbeWithSHAAnd3-KeyTripleDES-CBC) and the MAC's default of 1.
        let pbe = seq(&[
            oid(&[PKCS12_PBE, &[3]].concat()),
            seq(&[enc(0x04, &[1; 8]), int(700_000)]),
        ]);
        assert_eq!(check(&pfx(2, &pbe, None)), Ok(()));
        assert!(matches!(
            check(&pfx(3, &pbe, None)),
            Err(WorkRefused::TooMuchWork {
                iterations: 2_100_000
            })
        ));
        // A negative or huge count is refused, not wrapped.
        assert!(check(&pfx(1, &pbes2(pbkdf2(u64::MAX)), None)).is_err());
    }

    #[test]
    fn many_cheap_parts_scrypt_and_unknown_schemes_are_refused() {
        let cheap = pbes2(pbkdf2(1));
        assert_eq!(check(&pfx(16, &cheap, None)), Ok(()));
        assert_eq!(
            check(&pfx(17, &cheap, None)),
            Err(WorkRefused::TooManyParts { parts: 17 })
        );
        // scrypt-params: salt, costParameter 2^20, blockSize 8, parallelization 1.
        let scrypt = seq(&[
            oid(SCRYPT),
            seq(&[enc(0x04, &[1; 8]), int(1 << 20), int(8), int(1)]),
        ]);
        let err = check(&pfx(1, &pbes2(scrypt), None)).unwrap_err();
        assert_eq!(err, WorkRefused::Scrypt);
        let other_kdf = seq(&[oid(&[PKCS5, &[99]].concat()), seq(&[int(1)])]);
        let err = check(&pfx(1, &pbes2(other_kdf), None)).unwrap_err();
        assert!(err.to_string().contains("1.2.840.113549.1.5.99"), "{err}");
        let other_pbe = seq(&[oid(&[PKCS12_PBE, &[7]].concat()), seq(&[int(1)])]);
        assert!(matches!(
            check(&pfx(1, &other_pbe, None)),
            Err(WorkRefused::UnknownScheme { .. })
        ));
    }

    #[test]
    fn ciphertext_that_happens_to_start_like_der_is_opaque_not_malformed() {
        // An OCTET STRING of ciphertext (a shrouded key's encryptedData) whose first bytes
        // read as a constructed element, and whose inside then does not parse: random
        // bytes do this now and then (an `openssl pkcs12 -export` bundle was refused once in
        // a CI run). It is skipped, as any opaque OCTET STRING is.
        let ciphertext = [0x30, 0x03, 0x30, 0x01, 0xff];
        let bundle = seq(&[int(3), enc(0x04, &ciphertext)]);
        assert_eq!(check(&bundle), Ok(()));
        // A budget found inside encapsulated DER still counts.
        let costly = seq(&[
            int(3),
            enc(0x04, &seq(&[pbes2(pbkdf2(MAX_ITERATIONS + 1))])),
        ]);
        assert!(matches!(
            check(&costly),
            Err(WorkRefused::TooMuchWork { .. })
        ));
    }

    #[test]
    fn malformed_or_oversized_input_is_refused_quickly() {
        assert!(matches!(
            check(&[0x30, 0x80, 0, 0]),
            Err(WorkRefused::Malformed(_))
        ));
        assert!(matches!(
            check(&[0x30, 0x05, 0x02]),
            Err(WorkRefused::Malformed(_))
        ));
        let big = vec![0u8; MAX_BUNDLE + 1];
        assert!(matches!(check(&big), Err(WorkRefused::TooLarge { .. })));
        // Deep nesting is bounded, not a stack overflow.
        let mut deep = int(3);
        for _ in 0..200 {
            deep = seq(&[deep]);
        }
        assert!(check(&deep).is_err());
        // The biggest allowed file of parts is walked in well under a second.
        let started = Instant::now();
        let many = pfx(3000, &pbes2(pbkdf2(1)), None);
        assert!(many.len() <= MAX_BUNDLE, "{}", many.len());
        assert!(matches!(
            check(&many),
            Err(WorkRefused::TooManyParts { parts: 3000 })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

//! The per-installation certificate authority of the egress proxy. It signs the certificates
//! the proxy presents for the hosts it intercepts (those with a bound secret); the sandbox
//! trusts it through a CA bundle that also holds the system roots.
//!
//! Made with rcgen on first use: `ca.pem` (mode 0644) and `ca-key.pem` (mode 0600) in a folder
//! of the caller's; later loads refuse a key that group or others can read.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Duration as ChronoDuration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// File name of the CA certificate inside the CA folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA folder.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Where Debian/Ubuntu, Fedora/RHEL and Alpine/others keep the system's root bundle, in the
/// order they are tried.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How long a leaf certificate for an intercepted host is valid; the proxy makes a new one
/// long before that (its cache keeps them for a day).
const LEAF_DAYS: i64 = 30;
/// How long the CA itself is valid.
const CA_YEARS: i32 = 10;

/// Why the CA could not be loaded or made, or a certificate not issued.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file or folder operation failed.
    #[error("bottle CA: {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file is readable by group or others, or owned by someone else.
    #[error(
        "bottle CA: {path} {problem}; run `chmod 600 {path}` (and `chown` it to yourself), or delete ca.pem and ca-key.pem to make a new CA"
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Only one of the two files exists, or they do not belong together, or one does not parse.
    #[error(
        "bottle CA in {dir}: {problem}; delete ca.pem and ca-key.pem there to make a new CA (the sandbox trusts whichever CA is current)"
    )]
    Broken {
        /// The CA folder.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rcgen could not make a key or certificate.
    #[error("bottle CA: cannot make {what}: {source}")]
    Generate {
        /// What was being made.
        what: String,
        /// The underlying error.
        source: rcgen::Error,
    },
}

/// The proxy's certificate authority: its certificate (handed to the sandbox) and its key
/// (never leaves the host).
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf certificate: generating a key per host buys nothing here (the
    /// leaves live in this process only) and costs a key generation per new host.
    leaf_key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A certificate and key for one intercepted host, in the forms rustls takes.
#[derive(Debug)]
pub struct LeafCert {
    /// The leaf certificate (signed by the CA).
    pub cert: CertificateDer<'static>,
    /// Its private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl Ca {
    /// Loads the CA from `dir`, or makes one there (folder mode 0700, `ca.pem` 0644,
    /// `ca-key.pem` 0600) when neither file exists yet.
    pub fn load_or_create(dir: &Path) -> Result<Arc<Ca>, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ca::load(dir),
            (false, false) => Ca::create(dir),
            (true, false) => Err(CaError::Broken {
                dir: dir.to_owned(),
                problem: "ca.pem is there but ca-key.pem is missing".to_owned(),
            }),
            (false, true) => Err(CaError::Broken {
                dir: dir.to_owned(),
                problem: "ca-key.pem is there but ca.pem is missing".to_owned(),
            }),
        }
        .map(Arc::new)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Path of `ca.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// Writes the bundle the sandbox points `SSL_CERT_FILE` (and friends) at: the system roots
    /// (the first of [`SYSTEM_BUNDLES`] present, if any) followed by this CA. It must hold
    /// both, because `SSL_CERT_FILE` replaces OpenSSL's default roots instead of adding to
    /// them, and tunnelled hosts still present their own certificates. Mode 0644.
    pub fn write_bundle(&self, out: &Path) -> Result<(), CaError> {
        let mut text = match system_bundle() {
            Some(path) => std::fs::read_to_string(&path).map_err(|source| CaError::Io {
                what: "cannot read the system CA bundle",
                path,
                source,
            })?,
            None => String::new(),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# bytebot bottle egress proxy CA\n");
        text.push_str(&self.cert_pem);
        write_atomic(out, text.as_bytes(), 0o644)
    }

    /// Issues a certificate for `host` (a DNS name), valid from a day ago for `LEAF_DAYS` days.
    pub fn issue(&self, host: &str) -> Result<LeafCert, CaError> {
        let generate = |source| CaError::Generate {
            what: format!("a certificate for {host}"),
            source,
        };
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let now = Utc::now();
        let (y, m, d) = ymd(now - ChronoDuration::days(1));
        params.not_before = date_time_ymd(y, m, d);
        let (y, m, d) = ymd(now + ChronoDuration::days(LEAF_DAYS));
        params.not_after = date_time_ymd(y, m, d);
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(generate)?;
        Ok(LeafCert {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der())),
        })
    }

    fn create(dir: &Path) -> Result<Ca, CaError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CaError::Io {
                what: "cannot create the folder",
                path: dir.to_owned(),
                source,
            })?;
        let key = KeyPair::generate().map_err(|source| CaError::Generate {
            what: "the CA key".to_owned(),
            source,
        })?;
        let mut params = ca_params(&key);
        let now = Utc::now();
        let (y, m, d) = ymd(now - ChronoDuration::days(1));
        params.not_before = date_time_ymd(y, m, d);
        params.not_after = date_time_ymd(now.year() + CA_YEARS, 1, 1);
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::Generate {
                what: "the CA certificate".to_owned(),
                source,
            })?;
        // Key first: a crash between the two writes leaves a key without a certificate, which
        // the next load reports, never a certificate whose key is lost.
        write_atomic(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomic(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), 0o644)?;
        Ca::load(dir)
    }

    fn load(dir: &Path) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let meta = std::fs::metadata(&key_path).map_err(|source| CaError::Io {
            what: "cannot read",
            path: key_path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyExposed {
                problem: format!("is readable by group or others (mode {mode:04o})"),
                path: key_path,
            });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let you = unsafe { libc::geteuid() };
        if meta.uid() != you {
            return Err(CaError::KeyExposed {
                problem: format!("belongs to uid {}, not to you (uid {you})", meta.uid()),
                path: key_path,
            });
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Io {
                what: "cannot read",
                path: path.to_owned(),
                source,
            })
        };
        let key_pem = read(&key_path)?;
        let cert_pem = read(&cert_path)?;
        let broken = |problem: String| CaError::Broken {
            dir: dir.to_owned(),
            problem,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            broken(format!(
                "ca-key.pem does not hold a usable private key ({e})"
            ))
        })?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| broken(format!("ca.pem does not hold a certificate ({e})")))?;
        let issuer = Issuer::new(ca_params(&key), key);
        let leaf_key = KeyPair::generate().map_err(|source| CaError::Generate {
            what: "the key of intercepted hosts' certificates".to_owned(),
            source,
        })?;
        let ca = Ca {
            dir: dir.to_owned(),
            cert_pem,
            cert_der,
            issuer,
            leaf_key,
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// Issues a throwaway leaf and verifies it against `ca.pem` the way a client would, which
    /// catches a certificate and key that do not belong together before any run depends on it.
    fn self_check(&self) -> Result<(), CaError> {
        let broken = |problem: String| CaError::Broken {
            dir: self.dir.clone(),
            problem,
        };
        let host = "self-check.bottle.invalid";
        let leaf = self.issue(host)?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| broken(format!("ca.pem is not a usable CA certificate ({e})")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| broken(format!("ca.pem cannot anchor verification ({e})")))?;
        let name = ServerName::try_from(host)
            .map_err(|e| broken(format!("internal: bad self-check name ({e})")))?;
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &leaf.cert,
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            broken(format!(
                "a certificate signed with ca-key.pem does not verify against ca.pem ({e}); the two files do not belong together"
            ))
        })?;
        Ok(())
    }
}

/// The CA's parameters apart from dates and serial. The subject is derived from the public key,
/// so reloading the key alone rebuilds the exact issuer name the saved certificate carries (no
/// certificate parser needed) while two installations still get different names.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id = hex::encode(Sha256::digest(key.der_bytes()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "bytebot");
    dn.push(
        DnType::CommonName,
        format!("bytebot bottle egress CA {}", &id[..16]),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = Vec::<SanType>::new();
    params
}

/// Year, month and day of an instant, as rcgen's `date_time_ymd` takes them (midnight UTC).
fn ymd(at: chrono::DateTime<Utc>) -> (i32, u8, u8) {
    // Month (1..=12) and day (1..=31) always fit in u8.
    (at.year(), at.month() as u8, at.day() as u8)
}

/// The first system root bundle present, if any.
pub fn system_bundle() -> Option<PathBuf> {
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, with
/// `mode` from creation on, so no reader ever sees a half-written or wrongly readable file.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| CaError::Io { what, path, source }
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("cannot create", &tmp))?;
    // The umask may have narrowed the mode on creation; a reused temporary may have kept
    // an older one. Set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set the mode of", &tmp))?;
    file.write_all(bytes).map_err(io("cannot write", &tmp))?;
    file.sync_all().map_err(io("cannot write", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("cannot rename into place", path))
}

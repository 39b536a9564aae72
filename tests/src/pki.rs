//! Test certificates made with rcgen: one CA per test, server certificates for loopback
//! (`127.0.0.1`, `::1`, `localhost`) and client certificates with a chosen common name (etcd
//! takes the user from it), written as PEM files into the CA's temporary directory.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A PEM certificate file and its private key file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A throwaway certificate authority.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA named `name`; its certificate is written to [`Pki::ca_file`].
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Pki { ca, dir }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The file holding the CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A server certificate for loopback, named `name` in the files. It may also serve as a
    /// client certificate: etcd's gateway dials etcd itself with it.
    pub fn server(&self, name: &str) -> CertFiles {
        self.issue(
            name,
            name,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate whose common name is `cn`.
    pub fn client(&self, cn: &str) -> CertFiles {
        self.issue(
            &format!("client-{cn}"),
            cn,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// A fresh ECDSA P-256 key pair as (private key, public key) PEM files, for etcd's JWT
    /// tokens (`--auth-token jwt,priv-key=…,pub-key=…,sign-method=ES256`).
    pub fn signing_key(&self, name: &str) -> CertFiles {
        let key = KeyPair::generate().expect("signing key");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}-pub.pem")),
            key: self.dir.path().join(format!("{name}-priv.pem")),
        };
        std::fs::write(&files.cert, key.public_key_pem()).expect("write public key");
        std::fs::write(&files.key, key.serialize_pem()).expect("write private key");
        files
    }

    fn issue(&self, file: &str, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>) -> CertFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = usages;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

//! A throwaway CA and server certificates for the world's domains, made with openssl at
//! start-up: clients and federating servers trust only this CA.

use crate::world_files::{mkdir, write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files [`make`] wrote: the CA and one domain's certificate.
pub struct WorldCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    dir: PathBuf,
}

fn p(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_string()
}

/// Writes `dir/ca.crt` and a certificate for `domain` and `*.domain`, valid 7 days.
pub fn make(dir: &Path, domain: &str) -> WorldCerts {
    mkdir(dir, 0o700);
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca_cert),
        "-days",
        "7",
        "-subj",
        "/CN=SocialVPN test world CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let certs = issue(dir, &ca_cert, domain);
    // Clients anywhere read the CA certificate.
    mkdir(dir, 0o755);
    certs
}

impl WorldCerts {
    /// A certificate for another domain of the world, from the same CA.
    pub fn for_domain(&self, domain: &str) -> WorldCerts {
        issue(&self.dir, &self.ca_cert, domain)
    }
}

/// A certificate for `domain` and `*.domain` signed by the CA in `dir`, valid 7 days.
fn issue(dir: &Path, ca_cert: &Path, domain: &str) -> WorldCerts {
    let certs = WorldCerts {
        ca_cert: ca_cert.to_path_buf(),
        server_cert: dir.join(format!("{domain}.crt")),
        server_key: dir.join(format!("{domain}.key")),
        dir: dir.to_path_buf(),
    };
    let ca_key = dir.join("ca.key");
    let csr = dir.join(format!("{domain}.csr"));
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&certs.server_key),
        "-out",
        &p(&csr),
        "-subj",
        &format!("/CN={domain}"),
    ]);
    let ext = dir.join(format!("{domain}.ext"));
    write(
        &ext,
        &format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=DNS:{domain},DNS:*.{domain}\n"
        ),
    );
    let serial = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            & 0xffff_ffff_ffff
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&certs.ca_cert),
        "-CAkey",
        &p(&ca_key),
        "-set_serial",
        &serial,
        "-days",
        "7",
        "-out",
        &p(&certs.server_cert),
        "-extfile",
        &p(&ext),
    ]);
    certs
}

fn openssl(args: &[&str]) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

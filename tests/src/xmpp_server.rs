//! The world's XMPP server: prosody or ejabberd (users run both), each with its own
//! configuration, data and log directories under the world's state directory, started in the
//! foreground as its own system user so that the PID held is the server itself.

use crate::certs::WorldCerts;
use crate::netns::{ChildGuard, Namespace};
use crate::world_files::{chown, log_file, mkdir, terminate, wait_port, wait_ready, write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Which server software the world runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XmppServerKind {
    /// prosody 0.12 (Debian), stream management (`smacks`) on.
    Prosody,
    /// ejabberd 23.01 (Debian) with Debian's default module list (stream management,
    /// presence-subscription flood limits, fail2ban among them).
    Ejabberd,
}

impl XmppServerKind {
    pub const ALL: [XmppServerKind; 2] = [XmppServerKind::Prosody, XmppServerKind::Ejabberd];

    pub fn name(self) -> &'static str {
        match self {
            XmppServerKind::Prosody => "prosody",
            XmppServerKind::Ejabberd => "ejabberd",
        }
    }
}

impl std::fmt::Display for XmppServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const READY: Duration = Duration::from_secs(30);
/// A clean stop (SIGTERM) may take this long before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// ejabberd's Erlang distribution port on the internet namespace's loopback (no epmd: no
/// daemon outlives the world).
const EJABBERD_DIST_PORT: &str = "5210";
const EJABBERD_NODE: &str = "ejabberd@localhost";
/// The servers' direct TLS port (XEP-0368), on the XMPP address.
pub const DIRECT_TLS_PORT: u16 = 5223;
/// ejabberd's HTTPS listener serving `/oauth` (its stock port).
pub const OAUTH_HTTPS_PORT: u16 = 5443;

/// The server-to-server port, on the XMPP address (found through `_xmpp-server._tcp`).
pub const S2S_PORT: u16 = 5269;

/// Server-to-server federation: the world's DNS server (SRV `_xmpp-server._tcp` of the other
/// domain) and the CA whose certificates the servers accept from each other.
pub(crate) struct Federation {
    pub(crate) dns: Ipv4Addr,
    pub(crate) ca_cert: PathBuf,
}

/// An authorization server the XMPP server asks about the tokens it is shown: its base URL,
/// the secret it wants (ejabberd's `oauth_db_type: rest`: as a bearer header; prosody's
/// `mod_auth_oauthbearer`: as the client secret of `client_id`).
pub(crate) struct TokenLookup {
    pub(crate) url: String,
    pub(crate) secret: String,
    pub(crate) client_id: String,
}

/// What a world's server does besides serving its domain's clients.
#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) offer: Option<OfferedTurn>,
    pub(crate) federation: Option<Federation>,
    /// Tokens from this server (prosody: SASL OAUTHBEARER, and passwords no longer work;
    /// ejabberd: X-OAUTH2 besides passwords).
    pub(crate) token_lookup: Option<TokenLookup>,
}

/// A TURN server (shared-secret mode) the XMPP server hands out by XEP-0215.
pub(crate) struct OfferedTurn {
    pub(crate) addr: SocketAddrV4,
    pub(crate) secret: String,
    /// How long the credentials it hands out last (prosody only; none: its default, a day).
    pub(crate) lifetime_secs: Option<u32>,
}

pub(crate) struct XmppServer {
    kind: XmppServerKind,
    dir: PathBuf,
    addr: SocketAddrV4,
    domain: String,
    federated: bool,
    process: Option<ChildGuard>,
}

impl XmppServer {
    /// Writes the server's configuration (listening on `addr`, STARTTLS required, the
    /// world's certificate; federating with other servers of the world if `federation`
    /// says how) under `state`; [`XmppServer::start`] runs it. One server of each kind per
    /// world.
    pub(crate) fn prepare(
        kind: XmppServerKind,
        state: &Path,
        certs: &WorldCerts,
        addr: SocketAddrV4,
        domain: &str,
        extras: &Extras,
    ) -> XmppServer {
        let dir = state.join(kind.name());
        for sub in ["data", "log", "certs"] {
            mkdir(&dir.join(sub), 0o750);
        }
        let s = XmppServer {
            kind,
            dir,
            addr,
            domain: domain.to_string(),
            federated: extras.federation.is_some(),
            process: None,
        };
        match kind {
            XmppServerKind::Prosody => s.write_prosody_config(certs, extras),
            XmppServerKind::Ejabberd => s.write_ejabberd_config(certs, extras),
        }
        chown(&s.dir, kind.name());
        mkdir(&s.dir, 0o755);
        s
    }

    pub(crate) fn kind(&self) -> XmppServerKind {
        self.kind
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("log").join(match self.kind {
            XmppServerKind::Prosody => "prosody.log",
            XmppServerKind::Ejabberd => "ejabberd.log",
        })
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.join("log").join("stdout.log")
    }

    /// Starts the server (if it is not running) and waits until it accepts connections.
    pub(crate) fn start(&mut self, inet: &Namespace) {
        if self.pid().is_some() {
            return;
        }
        let out = log_file(&self.stdout_path());
        let mut cmd = inet.command("setpriv");
        let user = self.kind.name();
        cmd.args(["--reuid", user, "--regid", user, "--init-groups"]);
        match self.kind {
            XmppServerKind::Prosody => {
                cmd.args(["prosody", "--config"])
                    .arg(self.prosody_config())
                    .arg("-F");
            }
            XmppServerKind::Ejabberd => {
                // What `ejabberdctl foreground` runs, without its shell wrapper (whose PID
                // would not be the server's) and without epmd.
                let data = self.dir.join("data");
                cmd.arg("env")
                    .envs(self.ejabberd_env())
                    .args(["/usr/bin/erl", "-sname", EJABBERD_NODE])
                    .args(["-erl_epmd_port", EJABBERD_DIST_PORT, "-start_epmd", "false"])
                    .args(["+K", "true", "-mnesia", "dir"])
                    .arg(format!("\"{}\"", data.display()))
                    .args(["-s", "ejabberd", "-noinput"])
                    .current_dir(&data);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.kind));
        let mut child = ChildGuard(child);
        let logs = [self.stdout_path(), self.log_path()];
        let addr = SocketAddr::V4(self.addr);
        let s2s = SocketAddr::V4(SocketAddrV4::new(*self.addr.ip(), S2S_PORT));
        wait_ready(self.kind.name(), &mut child, &logs, READY, || {
            wait_port(inet, addr, Duration::from_millis(200))
                && (!self.federated || wait_port(inet, s2s, Duration::from_millis(200)))
        });
        self.process = Some(child);
    }

    /// The server's PID while it runs.
    pub(crate) fn pid(&mut self) -> Option<u32> {
        self.process.as_mut()?.running_pid()
    }

    /// A clean shutdown (SIGTERM): the server closes its clients' streams first (and tells
    /// their contacts they went offline). Data stays for [`XmppServer::start`].
    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            terminate(&mut p, STOP_GRACE);
        }
    }

    /// SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Creates an account. prosody's works whether or not the server runs; ejabberd's needs
    /// it running.
    pub(crate) fn register(&self, inet: &Namespace, user: &str, password: &str) {
        let out = match self.kind {
            XmppServerKind::Prosody => {
                let cfg = self.prosody_config();
                inet.output(
                    "timeout",
                    &[
                        "20",
                        "prosodyctl",
                        "--config",
                        cfg.to_str().expect("UTF-8 path"),
                        "register",
                        user,
                        &self.domain,
                        password,
                    ],
                )
            }
            XmppServerKind::Ejabberd => {
                // Right after start (more so on a busy machine) ejabberd may accept
                // connections before its tables exist: try again for a while.
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let out = self.ejabberdctl(inet, &["register", user, &self.domain, password]);
                    let text = String::from_utf8_lossy(&out.stdout);
                    // (`ets_cache:get_counter` failing: its caches are not up yet; "Database
                    // failure": its tables are still loading, seen once in a suite on 2 busy
                    // cores while three users registered at once.)
                    let early = text.contains("no_exists")
                        || text.contains("not running")
                        || text.contains("ets_cache")
                        || text.contains("Database failure");
                    if out.status.success() || !early || std::time::Instant::now() > deadline {
                        break out;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        };
        assert!(
            out.status.success(),
            "{} register {user}: {}\n{}",
            self.kind,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An OAuth token for `user` with scope `sasl_auth`, valid `ttl_secs` (ejabberd only).
    pub(crate) fn issue_token(&self, inet: &Namespace, user: &str, ttl_secs: u32) -> String {
        assert_eq!(self.kind, XmppServerKind::Ejabberd, "tokens are ejabberd's");
        let jid = format!("{user}@{}", self.domain);
        let out = self.ejabberdctl(
            inet,
            &[
                "oauth_issue_token",
                &jid,
                &ttl_secs.to_string(),
                "sasl_auth",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "oauth_issue_token: {text}");
        // "TOKEN\t[scopes]\tExpires in N seconds"
        text.split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no token in {text:?}"))
            .to_string()
    }

    /// Revokes an OAuth token (ejabberd only).
    pub(crate) fn revoke_token(&self, inet: &Namespace, token: &str) {
        let out = self.ejabberdctl(inet, &["oauth_revoke_token", token]);
        assert!(
            out.status.success(),
            "oauth_revoke_token: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// `program` run in the internet namespace as the ejabberd user, with the instance's
    /// environment, in its data directory.
    fn as_ejabberd(&self, inet: &Namespace, program: &str) -> std::process::Command {
        let mut cmd = inet.command("setpriv");
        cmd.args([
            "--reuid",
            "ejabberd",
            "--regid",
            "ejabberd",
            "--init-groups",
        ])
        .arg("env")
        .envs(self.ejabberd_env())
        .args(["timeout", "30", program])
        .current_dir(self.dir.join("data"))
        .stdin(Stdio::null());
        cmd
    }

    /// Runs `ejabberdctl ARGS` against the running server.
    fn ejabberdctl(&self, inet: &Namespace, args: &[&str]) -> std::process::Output {
        self.as_ejabberd(inet, "/usr/sbin/ejabberdctl")
            .args(["--no-timeout", "-n", EJABBERD_NODE, "--config-dir"])
            .arg(self.dir.join("config"))
            .arg("--spool")
            .arg(self.dir.join("data"))
            .arg("--logs")
            .arg(self.dir.join("log"))
            .args(args)
            .output()
            .expect("cannot run ejabberdctl")
    }

    /// Makes what the server wrote so far survive a crash: ejabberd keeps recent database
    /// writes (accounts, rosters) in its log buffers, which a SIGKILL loses (a server that
    /// has run for minutes has long written them). prosody writes at once.
    pub(crate) fn sync(&self, inet: &Namespace) {
        if self.kind != XmppServerKind::Ejabberd {
            return;
        }
        // Disc-only tables are dets files, which write behind a cache of their own.
        let eval = format!(
            "N = '{EJABBERD_NODE}', L = [rpc:call(N, mnesia, sync_log, []), \
             rpc:call(N, mnesia, dump_log, [])], \
             D = [rpc:call(N, dets, sync, [T]) || T <- rpc:call(N, dets, all, [])], \
             io:format(\"~p ~p~n\", [L, lists:usort(D)]), halt(0)."
        );
        let out = self
            .as_ejabberd(inet, "/usr/bin/erl")
            .arg("-sname")
            .arg(format!("sync-{}@localhost", std::process::id()))
            .args(["-hidden", "-noinput", "-erl_epmd_port", EJABBERD_DIST_PORT])
            .args([
                "-start_epmd",
                "false",
                "-dist_listen",
                "false",
                "-eval",
                &eval,
            ])
            .output()
            .expect("cannot run erl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.trim() == "[ok,dumped] [ok]",
            "ejabberd sync: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn prosody_config(&self) -> PathBuf {
        self.dir.join("prosody.cfg.lua")
    }

    fn write_prosody_config(&self, certs: &WorldCerts, extras: &Extras) {
        let (offer, federation) = (extras.offer.as_ref(), extras.federation.as_ref());
        // Sign-in tokens through prosody-modules' OAUTHBEARER pair (Debian's prosody-modules):
        // the token is checked by a GET of `oauth_url` — which cannot name the user, so that
        // module takes any valid token for any account (a deployment would need better).
        let (auth, sasl_module) = match &extras.token_lookup {
            Some(t) => (
                format!(
                    "authentication = \"oauthbearer\"\noauth_client_id = \"{}\"\n\
                     oauth_client_secret = \"{}\"\n\
                     oauth_url = \"{}/introspect/{{{{password}}}}\"\n",
                    t.client_id, t.secret, t.url
                ),
                " \"sasl_oauthbearer\";",
            ),
            None => ("authentication = \"internal_hashed\"\n".to_string(), ""),
        };
        let certs_dir = self.dir.join("certs");
        let (cert, key) = self.copy_certs(certs, &certs_dir);
        let s2s = match federation {
            // Peers are authenticated by certificate (no dialback fallback); names resolve
            // through libunbound, which answers `test.` itself unless told not to.
            Some(f) => {
                let ca = certs_dir.join("ca.crt");
                std::fs::copy(&f.ca_cert, &ca).expect("copy the CA certificate");
                format!(
                    "s2s_interfaces = {{ \"{ip}\" }}\ns2s_ports = {{ {S2S_PORT} }}\n\
                     s2s_secure_auth = true\n\
                     ssl = {{ certificate = \"{cert}\"; key = \"{key}\"; cafile = \"{ca}\" }}\n\
                     unbound = {{ resolvconf = true; options = {{ [\"local-zone:\"] = \"test. transparent\" }} }}\n",
                    ip = self.addr.ip(),
                    cert = cert.display(),
                    key = key.display(),
                    ca = ca.display(),
                )
            }
            None => format!(
                "modules_disabled = {{ \"s2s\" }}\n\
                 ssl = {{ certificate = \"{}\"; key = \"{}\" }}\n",
                cert.display(),
                key.display()
            ),
        };
        let cfg = format!(
            r#"-- SocialVPN test world (generated)
prosody_user = "prosody"
prosody_group = "prosody"
data_path = "{data}"
plugin_paths = {{ }}
interfaces = {{ "{ip}" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ {direct_tls_port} }}
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "carbons"; "pep"; "private"; "blocklist";
  "ping"; "smacks"; "csi_simple"; "posix";{turn_module}{sasl_module}
}}
c2s_require_encryption = true
s2s_require_encryption = true
allow_unencrypted_plain_auth = false
allow_registration = false
{auth}storage = "internal"
log = {{ info = "{log}/prosody.log"; error = "{log}/prosody.err" }}
certificates = "certs"
{s2s}{turn}
VirtualHost "{domain}"
"#,
            data = self.dir.join("data").display(),
            ip = self.addr.ip(),
            port = self.addr.port(),
            log = self.dir.join("log").display(),
            domain = self.domain,
            auth = auth,
            sasl_module = sasl_module,
            direct_tls_port = DIRECT_TLS_PORT,
            turn_module = if offer.is_some() {
                " \"turn_external\";"
            } else {
                ""
            },
            turn = match offer {
                // mod_turn_external answers XEP-0215 queries with STUN and TURN services and
                // credentials valid a day (its default TTL) unless the world says otherwise.
                Some(o) => format!(
                    "turn_external_secret = \"{}\"\nturn_external_host = \"{}\"\n\
                     turn_external_port = {}\n{}",
                    o.secret,
                    o.addr.ip(),
                    o.addr.port(),
                    o.lifetime_secs
                        .map(|ttl| format!("turn_external_ttl = {ttl}\n"))
                        .unwrap_or_default()
                ),
                None => String::new(),
            },
        );
        write(&self.prosody_config(), &cfg);
    }

    fn copy_certs(&self, certs: &WorldCerts, to: &Path) -> (PathBuf, PathBuf) {
        let cert = to.join(format!("{}.crt", self.domain));
        let key = to.join(format!("{}.key", self.domain));
        std::fs::copy(&certs.server_cert, &cert).expect("copy the server certificate");
        std::fs::copy(&certs.server_key, &key).expect("copy the server key");
        (cert, key)
    }

    fn ejabberd_env(&self) -> Vec<(&'static str, PathBuf)> {
        let config = self.dir.join("config");
        vec![
            ("HOME", self.dir.join("data")),
            ("EJABBERD_CONFIG_PATH", config.join("ejabberd.yml")),
            ("EJABBERD_LOG_PATH", self.log_path()),
            ("ERL_INETRC", config.join("inetrc")),
            ("ERL_LIBS", PathBuf::from("/usr/lib/x86_64-linux-gnu")),
            ("ERL_DIST_PORT", PathBuf::from(EJABBERD_DIST_PORT)),
            ("ERL_CRASH_DUMP_BYTES", PathBuf::from("0")),
        ]
    }

    /// Debian's configuration with the world's host, certificate and one STARTTLS listener:
    /// the module list is Debian 23.01's default one.
    fn write_ejabberd_config(&self, certs: &WorldCerts, extras: &Extras) {
        let (offer, federation) = (extras.offer.as_ref(), extras.federation.as_ref());
        let config = self.dir.join("config");
        mkdir(&config, 0o750);
        let (cert, key) = self.copy_certs(certs, &self.dir.join("certs"));
        let pem = self.dir.join("certs").join("server.pem");
        let text = std::fs::read_to_string(&cert).expect("certificate")
            + &std::fs::read_to_string(&key).expect("key");
        write(&pem, &text);
        let (inetrc, s2s_listener, s2s_ca) = match federation {
            // Erlang's own resolver asks the world's DNS server (SRV records included).
            Some(f) => {
                let ca = self.dir.join("certs").join("ca.crt");
                std::fs::copy(&f.ca_cert, &ca).expect("copy the CA certificate");
                let [a, b, c, d] = f.dns.octets();
                (
                    format!("{{lookup,[\"file\",\"dns\"]}}.\n{{nameserver,{{{a},{b},{c},{d}}}}}.\n"),
                    format!(
                        "\n  -\n    port: {S2S_PORT}\n    ip: \"{}\"\n    module: ejabberd_s2s_in\n    \
                         max_stanza_size: 524288",
                        self.addr.ip()
                    ),
                    format!("s2s_cafile: \"{}\"\n", ca.display()),
                )
            }
            None => (
                "{lookup,[\"file\",\"native\"]}.\n".to_string(),
                String::new(),
                String::new(),
            ),
        };
        write(&config.join("inetrc"), &inetrc);
        let yml = format!(
            r#"# SocialVPN test world (generated from Debian's ejabberd.yml)
loglevel: info
log_rotate_count: 0
hosts:
  - "{domain}"
certfiles:
  - "{pem}"
define_macro:
  'TLS_CIPHERS': "HIGH:!aNULL:!eNULL:!3DES:@STRENGTH"
  'TLS_OPTIONS':
    - "no_sslv3"
    - "no_tlsv1"
    - "no_tlsv1_1"
    - "cipher_server_preference"
    - "no_compression"
c2s_ciphers: 'TLS_CIPHERS'
s2s_ciphers: 'TLS_CIPHERS'
c2s_protocol_options: 'TLS_OPTIONS'
s2s_protocol_options: 'TLS_OPTIONS'
listen:
  -
    port: {port}
    ip: "{ip}"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    starttls_required: true
    protocol_options: 'TLS_OPTIONS'
  -
    port: {direct_tls_port}
    ip: "{ip}"
    module: ejabberd_c2s
    tls: true
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    protocol_options: 'TLS_OPTIONS'
  -
    port: {https_port}
    ip: "{ip}"
    module: ejabberd_http
    tls: true
    protocol_options: 'TLS_OPTIONS'
    request_handlers:
      /oauth: ejabberd_oauth{s2s_listener}
# Sign-in tokens (X-OAUTH2): a deployment that offers OAuth, as Debian's configuration
# documents it.
oauth_access: all
oauth_expire: 3600
{token_lookup}disable_sasl_mechanisms:
  - "digest-md5"
s2s_use_starttls: required
{s2s_ca}auth_password_format: scram
acl:
  admin:
    user:
      - ""
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128
access_rules:
  local:
    allow: local
  c2s:
    deny: blocked
    allow: all
  announce:
    allow: admin
  configure:
    allow: admin
  muc_create:
    allow: local
  pubsub_createnode:
    allow: local
  trusted_network:
    allow: loopback
shaper:
  normal:
    rate: 3000
    burst_size: 20000
  fast: 200000
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages:
    5000: admin
    100: all
  c2s_shaper:
    none: admin
    normal: all
  s2s_shaper: fast
modules:
  mod_adhoc: {{}}
  mod_admin_extra: {{}}
  mod_announce:
    access: announce
  mod_avatar: {{}}
  mod_blocking: {{}}
  mod_bosh: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_client_state: {{}}
  mod_configure: {{}}
  mod_disco: {{}}
  mod_fail2ban: {{}}
  mod_http_api: {{}}
  mod_last: {{}}
  mod_mqtt: {{}}
  mod_muc:
    access:
      - allow
    access_admin:
      - allow: admin
    access_create: muc_create
    access_persistent: muc_create
    access_mam:
      - allow
    default_room_options:
      mam: true
  mod_muc_admin: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_pres_counter:
    count: 5
    interval: 60
  mod_privacy: {{}}
  mod_private: {{}}
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
  mod_push: {{}}
  mod_push_keepalive: {{}}
  mod_roster:
    versioning: true
  mod_s2s_dialback: {{}}
  mod_shared_roster: {{}}
  mod_sic: {{}}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
  mod_stun_disco:{stun_disco}
  mod_vcard:
    search: false
  mod_vcard_xupdate: {{}}
  mod_version: {{}}
"#,
            domain = self.domain,
            pem = pem.display(),
            ip = self.addr.ip(),
            port = self.addr.port(),
            https_port = OAUTH_HTTPS_PORT,
            direct_tls_port = DIRECT_TLS_PORT,
            s2s_listener = s2s_listener,
            s2s_ca = s2s_ca,
            // Tokens are the authorization server's, asked about at every login (no cache:
            // a revoked token fails at once). ejabberd does not check that server's
            // certificate (23.01 passes no TLS options): it must sit on a trusted network.
            token_lookup = match &extras.token_lookup {
                Some(t) => format!(
                    "oauth_db_type: rest\next_api_url: \"{}\"\n\
                     ext_api_headers: \"Authorization: Bearer {}\"\noauth_use_cache: false\n",
                    t.url, t.secret
                ),
                None => String::new(),
            },
            stun_disco = match offer {
                // Only the external coturn, with credentials from the shared secret.
                Some(o) => format!(
                    r#"
    secret: "{secret}"
    offer_local_services: false
    services:
      -
        host: {ip}
        port: {port}
        type: stun
        transport: udp
        restricted: false
      -
        host: {ip}
        port: {port}
        type: turn
        transport: udp
        restricted: true"#,
                    secret = o.secret,
                    ip = o.addr.ip(),
                    port = o.addr.port()
                ),
                None => " {}".into(),
            },
        );
        write(&config.join("ejabberd.yml"), &yml);
    }
}

impl Drop for XmppServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! SSH for the built-in runner (SPEC §7.2): the system OpenSSH client through the `openssh`
//! crate, one multiplexed master connection per destination, shared by every task and every
//! object that targets it, so a task costs one channel on an open connection, not a login.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{KnownHosts as Check, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;

use super::target::{RawOut, Shell, quote};
use crate::config::{KnownHosts, Ssh};

/// Where and how to log in: one master connection per distinct value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub private_key: Option<PathBuf>,
    pub known_hosts: KnownHosts,
    pub known_hosts_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

impl Dest {
    /// The destination for an inventory host: its `ansible_*` vars over the `ssh:` defaults,
    /// and a play's `remote_user` over both defaults but under `ansible_user`.
    pub fn for_host(
        name: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
        remote_user: Option<&str>,
        ssh: &Ssh,
    ) -> Dest {
        let s = |k: &str| vars.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let port = vars
            .get("ansible_port")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(ssh.port);
        Dest {
            host: s("ansible_host").unwrap_or_else(|| name.to_owned()),
            port,
            user: s("ansible_user")
                .or_else(|| remote_user.map(str::to_owned))
                .or_else(|| ssh.user.clone()),
            private_key: s("ansible_ssh_private_key_file")
                .map(PathBuf::from)
                .or_else(|| ssh.private_key.clone()),
            known_hosts: ssh.known_hosts,
            known_hosts_file: ssh.known_hosts_file.clone(),
            connect_timeout: ssh.connect_timeout.0,
        }
    }

    fn shown(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

type Slot = Arc<Mutex<Option<Arc<Session>>>>;

/// The open master connections. Blocking API: the built-in runner runs on blocking threads,
/// and each call drives the async `openssh` session on the runtime behind `handle`.
pub struct SshPool {
    handle: Handle,
    control_dir: PathBuf,
    slots: Mutex<HashMap<Dest, Slot>>,
}

impl SshPool {
    pub fn new(handle: Handle) -> SshPool {
        SshPool {
            handle,
            // Control sockets have a path limit of about 100 bytes: keep them short.
            control_dir: std::env::temp_dir(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A shell on `dest`, connecting once; `Err` is the reason it is unreachable.
    pub fn shell(&self, dest: &Dest) -> Result<Arc<dyn Shell>, String> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(dest.clone()).or_default().clone()
        };
        // Holding the slot while connecting makes concurrent runs for one host share the
        // master instead of racing to open several.
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let session = match &*guard {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(self.connect(dest)?);
                *guard = Some(s.clone());
                s
            }
        };
        Ok(Arc::new(SshShell {
            session,
            slot: slot.clone(),
            handle: self.handle.clone(),
            dest: dest.shown(),
            lost: AtomicBool::new(false),
        }))
    }

    fn connect(&self, dest: &Dest) -> Result<Session, String> {
        let mut b = SessionBuilder::default();
        b.port(dest.port)
            .control_directory(&self.control_dir)
            .connect_timeout(dest.connect_timeout.max(Duration::from_secs(1)))
            .server_alive_interval(Duration::from_secs(15));
        if let Some(u) = &dest.user {
            b.user(u.clone());
        }
        if let Some(k) = &dest.private_key {
            b.keyfile(k);
        }
        match dest.known_hosts {
            KnownHosts::Strict => {
                b.known_hosts_check(Check::Strict);
            }
            KnownHosts::AcceptNew => {
                b.known_hosts_check(Check::Add);
            }
            KnownHosts::Off => {
                b.known_hosts_check(Check::Accept);
                b.user_known_hosts_file("/dev/null");
            }
        }
        if dest.known_hosts != KnownHosts::Off
            && let Some(f) = &dest.known_hosts_file
        {
            b.user_known_hosts_file(f);
        }
        let host = dest.host.clone();
        let timeout = dest.connect_timeout.max(Duration::from_secs(1)) + Duration::from_secs(5);
        self.handle
            .block_on(async move {
                // ConnectTimeout bounds the TCP connect; this bounds a server that accepts
                // and then says nothing.
                tokio::time::timeout(timeout, b.connect_mux(&host)).await
            })
            .map_err(|_| format!("ssh {}: connection timed out", dest.shown()))?
            .map_err(|e| format!("ssh {}: {}", dest.shown(), describe(&e)))
    }
}

/// openssh's errors nest the ssh client's stderr a level down; that is the useful part.
fn describe(e: &openssh::Error) -> String {
    match std::error::Error::source(e) {
        Some(inner) => format!("{e}: {inner}"),
        None => e.to_string(),
    }
}

struct SshShell {
    session: Arc<Session>,
    slot: Slot,
    handle: Handle,
    dest: String,
    lost: AtomicBool,
}

impl SshShell {
    /// Forgets a broken master so the next run opens a new one.
    fn drop_master(&self) {
        self.lost.store(true, Ordering::Relaxed);
        let mut g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.session)) {
            *g = None;
        }
    }
}

impl Shell for SshShell {
    fn exec(&self, script: &str, stdin: Option<&[u8]>) -> io::Result<RawOut> {
        // The remote login shell gets one word to run: /bin/sh with the script quoted, so
        // the script means the same whatever the user's shell is.
        let line = format!("/bin/sh -c {}", quote(script));
        let session = self.session.clone();
        let data = stdin.map(<[u8]>::to_vec);
        let res = self.handle.block_on(async move {
            let mut cmd = session.raw_command(line);
            cmd.stdin(if data.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn().await?;
            if let (Some(d), Some(mut w)) = (data, child.stdin().take()) {
                w.write_all(&d).await.map_err(openssh::Error::ChildIo)?;
                w.shutdown().await.map_err(openssh::Error::ChildIo)?;
            }
            child.wait_with_output().await
        });
        match res {
            Ok(out) => Ok(RawOut {
                rc: out.status.code().unwrap_or(-1),
                stdout: out.stdout,
                stderr: out.stderr,
            }),
            Err(e) => {
                self.drop_master();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("ssh {}: {}", self.dest, describe(&e)),
                ))
            }
        }
    }

    fn lost(&self) -> Option<String> {
        self.lost
            .load(Ordering::Relaxed)
            .then(|| format!("ssh {}: the connection was lost", self.dest))
    }
}

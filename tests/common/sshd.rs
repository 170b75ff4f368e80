//! A throw-away OpenSSH server for tests: `/usr/sbin/sshd` on a free 127.0.0.1 port, with
//! host and user keys made for it in a temp dir, public-key login only. No real host is
//! touched.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct TestSshd {
    pub port: u16,
    /// The private key that logs in.
    pub user_key: PathBuf,
    /// A known_hosts file that trusts this server's host key.
    pub known_hosts: PathBuf,
    pub user: String,
    dir: tempfile::TempDir,
    child: Child,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen failed");
}

impl TestSshd {
    pub fn start() -> TestSshd {
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("host_key");
        let user_key = dir.path().join("user_key");
        keygen(&host_key);
        keygen(&user_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized).expect("authorized_keys");
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n\
                     Subsystem sftp /usr/lib/openssh/sftp-server\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n",
                    host_key.display(),
                    authorized.display(),
                    dir.path().join("sshd.pid").display()
                ),
            )
            .expect("sshd_config");
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-E")
                .arg(dir.path().join("sshd.log"))
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start /usr/sbin/sshd (install openssh-server)");
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let pubkey =
                        std::fs::read_to_string(host_key.with_extension("pub")).expect("host key");
                    let known_hosts = dir.path().join("known_hosts");
                    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {pubkey}"))
                        .expect("known_hosts");
                    return TestSshd {
                        port,
                        user_key,
                        known_hosts,
                        user,
                        dir,
                        child,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        }
        panic!("sshd did not start: {last}");
    }

    /// How many logins (SSH connections that authenticated) the server has accepted.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// An Ansible YAML inventory with `hosts` as aliases of this server, each with the
    /// extra vars given, and Debian's python for the modules.
    pub fn inventory(&self, hosts: &[(&str, &str)]) -> String {
        let mut s = String::from(
            "all:\n  vars:\n    ansible_python_interpreter: /usr/bin/python3\n  children:\n    targets:\n      hosts:\n",
        );
        for (h, extra) in hosts {
            s.push_str(&format!(
                "        {h}: {{ansible_host: 127.0.0.1, ansible_port: {}, ansible_user: {}, ansible_ssh_private_key_file: {}{}{extra}}}\n",
                self.port,
                self.user,
                self.user_key.display(),
                if extra.is_empty() { "" } else { ", " },
            ));
        }
        s
    }

    /// `ANSIBLE_SSH_ARGS` that trust this server's host key only.
    pub fn ansible_ssh_args(&self) -> String {
        format!(
            "-o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
            self.known_hosts.display()
        )
    }

    /// A directory on the "target" for a test to write into.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// The `ssh:` block of a `stepsync.yaml` that reaches this server.
    pub fn ssh_config(&self) -> String {
        format!(
            "ssh: {{user: {}, port: {}, private_key: {}, known_hosts: strict, known_hosts_file: {}}}\n",
            self.user,
            self.port,
            self.user_key.display(),
            self.known_hosts.display()
        )
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

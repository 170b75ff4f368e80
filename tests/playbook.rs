//! Playbook payloads with either runner, over a real sshd started by the test: the rendered
//! recipe in the sys dir, the run, feedback from `set_stats`, a recipe run by hand, deletion,
//! one SSH master per host, host key policies, unreachable hosts, and several hosts at once
//! (SPEC §6.3, §6.4, §7, §8).

use crate::common::sshd::TestSshd;
use crate::common::{Service, Test, free_port, walk};

const TOKEN: &str = "pb-secret-9Qw";

const PLAYBOOK: &str = r#"- hosts: all
  gather_facts: false
  vars:
    state: present
  tasks:
    - name: write the greeting
      copy:
        dest: "{{ target_dir }}/{{ greeter_name }}.txt"
        content: "{{ greeting }}\n"
        mode: "0644"
      when: state == 'present'
    - name: remove the greeting
      file:
        path: "{{ target_dir }}/{{ greeter_name }}.txt"
        state: absent
      when: state == 'absent'
    - name: say where
      set_stats:
        data:
          path: "{{ target_dir }}/{{ greeter_name }}.txt"
          token_length: "{{ token | length }}"
"#;

const STEPDEF: &str = r#"kind: Actuator
model: Greeter
attributes:
  greeter_name: "{{ object.name }}"
  greeting: "{{ object.greeting }}"
  target_dir: "{{ object.dir }}"
  token: "{{ secret('tok') }}"
sync:
  playbook: greet.yml
  hosts: target
delete:
  playbook: greet.yml
  hosts: target
  vars: {state: absent}
feedback:
  greeting_file: "{{ result.stats.path }}"
  token_length: {jsonpath: "$.stats.token_length"}
"#;

const GREETER: &str = "models:\n  Greeter:\n    fields:\n      name: {type: string, required: true}\n      greeting: string\n      dir: string\n      greeting_file: {type: string, feedback: true}\n      token_length: {type: json, feedback: true}\n";

fn service(sshd: &TestSshd, target: &std::path::Path, runner: &str) -> Service {
    let svc = Service::new(GREETER);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: pb\nrunner: {runner}\nsecrets:\n  tok: {{env: PB_TOKEN}}\n{}",
            sshd.ssh_config()
        ),
    );
    // pyenv shims on the target would win interpreter discovery; Debian's python3 is certain.
    svc.file(
        "inventory.yaml",
        "all:\n  vars: {ansible_python_interpreter: /usr/bin/python3}\n  hosts:\n    target: {ansible_host: 127.0.0.1}\n",
    );
    svc.file("playbooks/greet.yml", PLAYBOOK);
    svc.file("stepdefs/greeter.yaml", STEPDEF);
    svc.file(
        "objects.yaml",
        &format!(
            "Greeter:\n  - {{name: hello, greeting: 'Hello, {{{{ 7 * 7 }}}}', dir: {}}}\n",
            target.display()
        ),
    );
    svc
}

/// A command with the secret in its environment.
fn cmd(svc: &Service, args: &[&str]) -> Test {
    svc.test().env("PB_TOKEN", TOKEN).args(args)
}

#[test]
fn ansible_runner_syncs_over_ssh_and_the_recipe_reruns_by_hand() {
    syncs_over_ssh_and_the_recipe_reruns_by_hand("ansible");
}

#[test]
fn builtin_runner_syncs_over_ssh_and_the_recipe_reruns_by_hand() {
    syncs_over_ssh_and_the_recipe_reruns_by_hand("builtin");
}

fn syncs_over_ssh_and_the_recipe_reruns_by_hand(runner: &str) {
    let sshd = TestSshd::start();
    let target = sshd.scratch("target");
    let svc = service(&sshd, &target, runner);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).run();
    if runner == "builtin" {
        assert_eq!(sshd.logins(), 1, "one master connection for the run");
    }

    // The data-model value reached the host as data, not as a template.
    let written =
        std::fs::read_to_string(target.join("hello.txt")).expect("greeting written over ssh");
    assert_eq!(written, "Hello, {{ 7 * 7 }}\n");
    let obj = svc.object("Greeter", "hello");
    assert_eq!(
        obj["fields"]["greeting_file"],
        target.join("hello.txt").display().to_string()
    );
    assert_eq!(obj["fields"]["token_length"], TOKEN.len());

    let dir = svc.path().join(".stepsync/sys/Greeter/hello");
    let recipe = std::fs::read_to_string(dir.join("sync.yml")).unwrap();
    assert!(recipe.contains("greeting: !unsafe"), "{recipe}");
    assert!(
        recipe.contains("STEPSYNC_SECRET_TOK") && recipe.contains("lookup("),
        "{recipe}"
    );
    let inventory = std::fs::read_to_string(dir.join("inventory.yml")).unwrap();
    assert!(inventory.contains("ansible_port"), "{inventory}");
    let logs: Vec<_> = std::fs::read_dir(dir.join("runs")).unwrap().collect();
    assert_eq!(logs.len(), 1);
    let log = std::fs::read_to_string(logs[0].as_ref().unwrap().path()).unwrap();
    assert!(
        log.contains("TASK [write the greeting]") && log.contains("PLAY RECAP"),
        "{log}"
    );
    for f in walk(&svc.path().join(".stepsync")) {
        let text = std::fs::read(&f).unwrap();
        assert!(
            !text.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "secret in {}",
            f.display()
        );
    }

    // Run by hand, as an operator would: nothing left to change.
    let by_hand = std::process::Command::new("ansible-playbook")
        .args(["-i", "inventory.yml", "sync.yml"])
        .current_dir(&dir)
        .env(
            "ANSIBLE_CONFIG",
            svc.path().join(".stepsync/sys/ansible.cfg"),
        )
        .env("STEPSYNC_SECRET_TOK", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&by_hand.stdout);
    assert!(
        by_hand.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&by_hand.stderr)
    );
    assert!(
        text.contains("changed=0") && text.contains("failed=0"),
        "{text}"
    );

    // Deleting runs the delete recipe (state: absent) and purges.
    svc.ok(&["delete", "Greeter", "hello"]);
    cmd(&svc, &["run", "--once"]).run();
    assert!(!target.join("hello.txt").exists());
    assert!(svc.keys("Greeter").is_empty());
}

#[test]
fn pretend_renders_playbooks_without_running_anything() {
    let sshd = TestSshd::start();
    let target = sshd.scratch("target");
    let svc = service(&sshd, &target, "ansible");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let out = cmd(&svc, &["plan"]).run();
    assert!(
        out.stdout.starts_with("+ create Greeter/hello (playbook)"),
        "{}",
        out.stdout
    );
    assert!(
        svc.path()
            .join(".stepsync/sys/.plan/Greeter/hello/sync.yml")
            .exists()
    );
    assert!(!target.join("hello.txt").exists(), "nothing ran");
}

/// A service whose `target` host is `127.0.0.1:port` with the given `ssh:` block.
fn builtin_service(ssh: &str, port: u16, target: &std::path::Path) -> Service {
    let svc = service_with(ssh, target);
    svc.file(
        "inventory.yaml",
        &format!("all:\n  hosts:\n    target: {{ansible_host: 127.0.0.1, ansible_port: {port}}}\n"),
    );
    svc
}

fn service_with(ssh: &str, target: &std::path::Path) -> Service {
    let svc = Service::new(GREETER);
    svc.file(
        "stepsync.yaml",
        &format!("name: pb\nsecrets:\n  tok: {{env: PB_TOKEN}}\n{ssh}"),
    );
    svc.file("playbooks/greet.yml", PLAYBOOK);
    svc.file("stepdefs/greeter.yaml", STEPDEF);
    svc.file(
        "objects.yaml",
        &format!(
            "Greeter:\n  - {{name: hello, greeting: hi, dir: {}}}\n",
            target.display()
        ),
    );
    svc
}

fn status_message(svc: &Service) -> String {
    svc.object("Greeter", "hello")["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn unreachable_hosts_are_reported_as_such() {
    let sshd = TestSshd::start();
    let target = sshd.scratch("target");
    // A port nothing listens on.
    let closed = free_port();
    let svc = builtin_service(&sshd.ssh_config(), closed, &target);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).status(1).run();
    let msg = status_message(&svc);
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(msg.contains("Connection refused"), "{msg}");
    let log_dir = svc.path().join(".stepsync/sys/Greeter/hello/runs");
    let log = walk(&log_dir)
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(
        log.contains("UNREACHABLE!") && log.contains("unreachable=1"),
        "{log}"
    );
}

#[test]
fn host_keys_are_checked_strictly_unless_configured_otherwise() {
    let sshd = TestSshd::start();
    let target = sshd.scratch("target");
    let empty = sshd.scratch("keys").join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let ssh = |policy: &str| {
        format!(
            "ssh: {{user: {}, private_key: {}, known_hosts: {policy}, known_hosts_file: {}}}\n",
            sshd.user,
            sshd.user_key.display(),
            empty.display()
        )
    };

    // strict (the default when unset): an unknown host key is refused.
    let svc = builtin_service(
        &format!(
            "ssh: {{user: {}, private_key: {}, known_hosts_file: {}}}\n",
            sshd.user,
            sshd.user_key.display(),
            empty.display()
        ),
        sshd.port,
        &target,
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).status(1).run();
    let msg = status_message(&svc);
    assert!(
        msg.contains("unreachable") && msg.contains("Host key verification failed"),
        "{msg}"
    );
    assert!(!target.join("hello.txt").exists());
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");

    // off: connects, and remembers nothing.
    let svc = builtin_service(&ssh("off"), sshd.port, &target);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).run();
    assert!(target.join("hello.txt").exists());
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");

    // accept-new: connects and records the key, which strict then accepts.
    std::fs::remove_file(target.join("hello.txt")).unwrap();
    let svc = builtin_service(&ssh("accept-new"), sshd.port, &target);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).run();
    let learned = std::fs::read_to_string(&empty).unwrap();
    let trusted = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let host_key = trusted.split_whitespace().nth(2).unwrap();
    assert!(learned.contains(host_key), "{learned}");
    std::fs::remove_file(target.join("hello.txt")).unwrap();
    let svc = builtin_service(&ssh("strict"), sshd.port, &target);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).run();
    assert!(target.join("hello.txt").exists());
}

#[test]
fn objects_on_several_hosts_run_at_once() {
    let (a, b) = (TestSshd::start(), TestSshd::start());
    let target = a.scratch("target");
    let svc = Service::new(
        "models:\n  Job:\n    fields:\n      name: {type: string, required: true}\n      host: string\n",
    );
    svc.file(
        "stepsync.yaml",
        &format!("name: hosts\nssh: {{user: {}, known_hosts: off}}\n", a.user),
    );
    svc.file(
        "inventory.yaml",
        &format!(
            "all:\n  hosts:\n    a: {{ansible_host: 127.0.0.1, ansible_port: {}, ansible_ssh_private_key_file: {}}}\n    b: {{ansible_host: 127.0.0.1, ansible_port: {}, ansible_ssh_private_key_file: {}}}\n",
            a.port,
            a.user_key.display(),
            b.port,
            b.user_key.display()
        ),
    );
    svc.file(
        "playbooks/job.yml",
        &format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - shell: 'date +%s.%N > {d}/{{{{ job }}}}.start; sleep 1; date +%s.%N > {d}/{{{{ job }}}}.end'\n",
            d = target.display()
        ),
    );
    svc.file(
        "stepdefs/job.yaml",
        "kind: Actuator\nmodel: Job\nattributes:\n  job: \"{{ object.name }}\"\nsync:\n  playbook: job.yml\n  hosts: \"{{ object.host }}\"\n",
    );
    svc.file(
        "objects.yaml",
        "Job:\n  - {name: one, host: a}\n  - {name: two, host: b}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    cmd(&svc, &["run", "--once"]).run();
    let t = |f: &str| -> f64 {
        std::fs::read_to_string(target.join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (s1, e1, s2, e2) = (t("one.start"), t("one.end"), t("two.start"), t("two.end"));
    assert!(
        s1 < e2 && s2 < e1,
        "the two runs overlap: one {s1}..{e1}, two {s2}..{e2}"
    );
    assert_eq!((a.logins(), b.logins()), (1, 1));
}

#[test]
fn a_host_that_never_answers_times_out() {
    let sshd = TestSshd::start();
    let target = sshd.scratch("target");
    // The kernel completes the TCP handshake for a listener that never accepts, so the
    // client waits for an SSH banner that never comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ssh = format!(
        "ssh: {{user: {}, private_key: {}, known_hosts: off, connect_timeout: 1s}}\n",
        sshd.user,
        sshd.user_key.display()
    );
    let svc = builtin_service(&ssh, port, &target);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let started = std::time::Instant::now();
    cmd(&svc, &["run", "--once"]).status(1).run();
    let msg = status_message(&svc);
    assert!(
        msg.contains("unreachable") && msg.contains("timed out"),
        "{msg}"
    );
    // Bounded by the timeout, not by the test harness: 1 s for ssh, 5 s of grace.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    drop(silent);
}

//! Playbook modules as typed parameters (issue #12): `stepsync validate` checks each module
//! argument against the module's parameters, with the place of the key and a suggestion;
//! `vars_files` problems are diagnostics at validation and errors at run time.

use crate::common::Service;
use serde_json::{Map, Value as Json};
use stepsync::config::Ssh;
use stepsync::inventory::Inventory;
use stepsync::playbook::run::{Options, run};

const SCHEMA: &str = "models:\n  Site:\n    fields:\n      name: {type: string, required: true}\n";

/// A service whose one actuator runs `playbooks/site.yml`, given here.
fn service(playbook: &str) -> Service {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/site.yaml",
        "kind: Actuator\nmodel: Site\nsync:\n  playbook: site.yml\n  hosts: localhost\ndelete:\n  playbook: site.yml\n  hosts: localhost\n",
    );
    svc.file("playbooks/site.yml", playbook);
    svc
}

fn tasks(tasks: &str) -> String {
    format!("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n{tasks}")
}

#[test]
fn a_misspelt_module_argument_is_reported_at_its_key_with_a_suggestion() {
    let svc = service(&tasks(
        "    - name: write it\n      copy: {dest: /tmp/x, contnet: \"hello\"}\n",
    ));
    let out = svc.expect(&["validate"], 2);
    let err = &out.stderr;
    assert!(
        err.contains("unknown argument `contnet` of module `copy`"),
        "{err}"
    );
    // Line 6 of the playbook, the column of `contnet`.
    assert!(err.contains("playbooks/site.yml:6:28"), "{err}");
    assert!(err.contains("did you mean `content`?"), "{err}");
}

#[test]
fn arguments_in_block_form_and_under_args_are_checked_too() {
    let svc = service(&tasks(
        "    - file:\n        path: /tmp/x\n        stat: touch\n    - command: ls\n      args:\n        chdri: /tmp\n",
    ));
    let err = svc.expect(&["validate"], 2).stderr;
    assert!(
        err.contains("unknown argument `stat` of module `file`"),
        "{err}"
    );
    assert!(err.contains("playbooks/site.yml:7:9"), "{err}");
    assert!(err.contains("did you mean `state`?"), "{err}");
    assert!(
        err.contains("unknown argument `chdri` of module `command`"),
        "{err}"
    );
    assert!(err.contains("playbooks/site.yml:10:9"), "{err}");
    assert!(err.contains("did you mean `chdir`?"), "{err}");
}

#[test]
fn a_literal_of_the_wrong_type_is_reported_at_the_value() {
    let svc = service(&tasks(
        "    - copy: {dest: /tmp/x, content: hi, force: maybe}\n    - file: {path: /tmp/y, mode: [1]}\n",
    ));
    let err = svc.expect(&["validate"], 2).stderr;
    assert!(
        err.contains("module `copy`: argument `force` must be a boolean"),
        "{err}"
    );
    assert!(err.contains("playbooks/site.yml:5:48"), "{err}");
    assert!(
        err.contains("module `file`: argument `mode` must be an octal string"),
        "{err}"
    );
    assert!(err.contains("playbooks/site.yml:6:34"), "{err}");
}

#[test]
fn templates_aliases_and_ansible_spellings_pass() {
    let svc = service(&tasks(
        "    - copy: {dest: /tmp/x, content: hi, force: \"{{ f }}\", mode: \"{{ m }}\", owner: root}\n\
         \x20   - file: {name: /tmp/y, state: directory, mode: \"0755\"}\n\
         \x20   - lineinfile: {dest: /tmp/z, regex: '^a', value: b, create: yes}\n\
         \x20   - ansible.builtin.command: echo hi\n\
         \x20   - shell: echo hi\n\
         \x20     args: {chdir: /tmp, creates: /nothing}\n\
         \x20   - debug: msg=hello\n\
         \x20   - set_fact: {anything: 1, goes: 2}\n\
         \x20   - service: {name: x, enabled: on}\n\
         \x20   - pause: {seconds: 1}\n",
    ));
    let out = svc.expect(&["validate"], 0);
    assert!(!out.stderr.contains("error"), "{}", out.stderr);
}

#[test]
fn key_value_words_are_checked_like_a_map() {
    let svc = service(&tasks("    - debug: msgs=hello\n"));
    let err = svc.expect(&["validate"], 2).stderr;
    assert!(
        err.contains("unknown argument `msgs` of module `debug`"),
        "{err}"
    );
    assert!(err.contains("did you mean `msg`?"), "{err}");
}

#[test]
fn vars_files_problems_are_reported_with_their_place() {
    let svc = service(
        "- hosts: localhost\n  gather_facts: false\n  vars_files:\n    - vars/missing.yml\n    - vars/broken.yml\n    - vars/list.yml\n    - vars/fine.yml\n  tasks:\n    - debug: {msg: hi}\n",
    );
    svc.file("playbooks/vars/broken.yml", "a: [1, 2\n");
    svc.file("playbooks/vars/list.yml", "- a\n- b\n");
    svc.file("playbooks/vars/fine.yml", "a: 1\n");
    let err = svc.expect(&["validate"], 2).stderr;
    assert!(err.contains("vars file"), "{err}");
    assert!(err.contains("missing.yml does not exist"), "{err}");
    // The missing file: where the play names it.
    assert!(err.contains("playbooks/site.yml:4:7"), "{err}");
    // The broken one: its own syntax error.
    assert!(err.contains("playbooks/vars/broken.yml:"), "{err}");
    assert!(
        err.contains("a vars file is a map of variables, not a list"),
        "{err}"
    );
    assert!(err.contains("playbooks/vars/list.yml:1:1"), "{err}");
    assert!(!err.contains("fine.yml"), "{err}");
}

#[test]
fn a_role_vars_file_that_is_not_a_map_is_reported() {
    let svc = service("- hosts: localhost\n  gather_facts: false\n  roles: [web]\n");
    svc.file("playbooks/roles/web/tasks/main.yml", "- debug: {msg: hi}\n");
    svc.file("playbooks/roles/web/defaults/main.yml", "just a string\n");
    let err = svc.expect(&["validate"], 2).stderr;
    assert!(
        err.contains("a vars file is a map of variables, not a string"),
        "{err}"
    );
    assert!(
        err.contains("playbooks/roles/web/defaults/main.yml:1:1"),
        "{err}"
    );
}

/// Runs a playbook with the built-in runner on the engine's own host.
fn run_local(
    dir: &std::path::Path,
    playbook: &str,
) -> (stepsync::payload::playbook::PlaybookResult, String) {
    let pb = dir.join("play.yml");
    std::fs::write(&pb, playbook).expect("write playbook");
    let (inv, ssh, attrs) = (
        Inventory::default(),
        Ssh::default(),
        Map::<String, Json>::new(),
    );
    let opts = Options {
        playbooks_dir: dir,
        inventory: &inv,
        attributes: &attrs,
        hosts: None,
        ssh_pool: None,
        ssh: &ssh,
    };
    run(&pb, &opts).expect("the playbook loads")
}

#[test]
fn a_missing_vars_file_fails_the_run_instead_of_using_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (r, log) = run_local(
        dir.path(),
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  vars_files: [nothere.yml]\n  tasks:\n    - debug: {msg: hi}\n",
    );
    assert_eq!(r.failed, 1, "{log}");
    let msg = r.message.unwrap_or_default();
    assert!(msg.contains("nothere.yml does not exist"), "{msg}");
    assert!(msg.contains("play.yml:4:"), "{msg}");
}

#[test]
fn a_templated_vars_file_name_is_rendered_at_run_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("prod.yml"), "greeting: hello from prod\n").expect("write");
    let (r, log) = run_local(
        dir.path(),
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  vars: {env: prod}\n  vars_files: [\"{{ env }}.yml\"]\n  tasks:\n    - debug: {msg: \"{{ greeting }}\"}\n",
    );
    assert_eq!(r.failed, 0, "{log}");
    assert!(log.contains("hello from prod"), "{log}");
}

#[test]
fn key_value_words_and_free_form_commands_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (r, log) = run_local(
        dir.path(),
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n    - debug: msg=hello-words\n    - command: echo free-form\n      register: out\n    - assert: {that: \"out.stdout == 'free-form'\"}\n",
    );
    assert_eq!(r.failed, 0, "{log}");
    assert!(log.contains("hello-words"), "{log}");
}

#[test]
fn a_templated_argument_of_the_wrong_type_fails_at_run_time_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("x");
    let (r, log) = run_local(
        dir.path(),
        &format!(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  vars: {{f: maybe}}\n  tasks:\n    - copy: {{dest: {}, content: hi, force: \"{{{{ f }}}}\"}}\n",
            dest.display()
        ),
    );
    assert_eq!(r.failed, 1, "{log}");
    let msg = r.message.unwrap_or_default();
    assert!(msg.contains("argument `force` must be a boolean"), "{msg}");
}

//! `stepsync validate`: the whole service directory in one pass, every problem with its
//! place, warnings for what is legal but suspicious, exit 2 on any error (SPEC §10).

use crate::common::Service;

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      address: string
  Server:
    fields:
      name: {type: string, required: true}
      port: int
      site: {type: ref, to: Site}
      url: {type: string, feedback: true}
      pid: {type: int, feedback: true}
";

fn broken() -> Service {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/server.yaml",
        r#"kind: Actuator
model: Server
attributes:
  server_name: "{{ object.name }}"
  site_addr: "{{ object.site.adress }}"
  port: "{{ object.prot }}"
sync:
  playbook: server.yml
  hosts: "{{ site_adr }}"
feedback:
  url: "{{ result.stats.url }}"
"#,
    );
    svc.file(
        "playbooks/server.yml",
        r#"- hosts: all
  gather_facts: false
  roles:
    - serve
    - servr
  tasks:
    - name: a module outside the subset
      community.general.ufw:
        rule: allow
    - name: a template that is not there
      template:
        src: missing.j2
        dest: /tmp/x
"#,
    );
    svc.file(
        "playbooks/roles/serve/tasks/main.yml",
        "- name: fine\n  debug: {msg: hi}\n- name: misspelt keyword\n  debug: {msg: hi}\n  whenn: true\n",
    );
    svc.file(
        "objects.yaml",
        "Server:\n  - {name: a, port: not-a-number}\n",
    );
    svc
}

#[test]
fn every_problem_is_reported_at_once_with_its_place() {
    let svc = broken();
    let out = svc.expect(&["validate", "-f", "objects.yaml"], 2);
    let err = &out.stderr;
    let expect = [
        // object paths are checked through refs, with suggestions
        ("Site has no field `adress`", "stepdefs/server.yaml:5:"),
        ("Server has no field `prot`", "stepdefs/server.yaml:6:"),
        // payload templates may use only what is defined
        (
            "`site_adr` is not defined in the sync payload",
            "stepdefs/server.yaml:9:",
        ),
        // playbooks: modules, keywords, roles, files
        (
            "module `community.general.ufw` is not in the built-in subset",
            "playbooks/server.yml:8:",
        ),
        ("role `servr` not found", "playbooks/server.yml:5:"),
        (
            "template source `missing.j2` not found",
            "playbooks/server.yml:10:",
        ),
        (
            "unknown task keyword or module `whenn`",
            "playbooks/roles/serve/tasks/main.yml:5:",
        ),
        // objects files are checked against the schema
        ("objects.yaml", "objects.yaml:2:"),
    ];
    for (what, place) in expect {
        assert!(err.contains(what), "missing `{what}` in:\n{err}");
        assert!(err.contains(place), "missing `{place}` in:\n{err}");
    }
    assert!(err.contains("did you mean `address`?"), "{err}");
    assert!(err.contains("did you mean `port`?"), "{err}");
    assert!(err.contains("did you mean `site_addr`?"), "{err}");
    assert!(err.contains("runner: ansible"), "{err}");
    assert!(err.contains("did you mean `when`?"), "{err}");
    // warnings too: no delete payload, a feedback field never written
    assert!(
        err.contains("warning: the actuator of Server has no `delete`"),
        "{err}"
    );
    assert!(
        err.contains("feedback field `pid` of Server is never written"),
        "{err}"
    );
    assert!(
        out.stdout.starts_with("invalid: 8 errors, 2 warnings"),
        "{}",
        out.stdout
    );
    // nothing is written by a check
    assert!(!svc.path().join(".stepsync").exists());
}

#[test]
fn the_same_playbook_is_fine_for_ansible_playbook() {
    broken()
        .test()
        .config("name: test\nrunner: ansible\n")
        .args(["validate"])
        .status(2)
        .stderr_lacks("built-in subset")
        .stderr_lacks("missing.j2")
        .run();
}

/// Real Ansible names outside the built-in subset are said to be so, as keywords or modules,
/// with the `runner: ansible` hint, and never "corrected" into another real name (#15).
#[test]
fn real_ansible_names_outside_the_subset_get_the_runner_hint_not_a_near_miss() {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/server.yaml",
        "kind: Actuator\nmodel: Server\nsync: {playbook: server.yml}\n",
    );
    svc.file(
        "playbooks/server.yml",
        "- hosts: all
  gather_facts: false
  tasks:
    - uri: {url: x}
    - cron: {name: x}
    - debug: {msg: hi}
      with_fileglob: ['*.txt']
    - command: /bin/true
      register: r
      throttle: 3
    - service_facts:
    - service: {name: x, state: started}
      check_mode: true
    - debug: {msg: hi}
      debugger: on_failed
    - debug: {msg: hi}
      check_mode: '{{ dry }}'
    - community.general.ufw: {state: enabled}
    - debugg: {msg: typo}
",
    );
    let out = svc.test().args(["validate"]).status(2).run();
    for (line, what) in [
        (4, "module `uri`"),
        (5, "module `cron`"),
        (7, "loop keyword `with_fileglob`"),
        (10, "task keyword `throttle`"),
        (11, "module `service_facts`"),
        (12, "module `service` in check mode"),
        (15, "task keyword `debugger`"),
        (17, "a templated `check_mode`"),
        (18, "module `community.general.ufw`"),
    ] {
        assert!(
            out.stderr.contains(&format!(
                "{what} is not in the built-in subset\n  --> playbooks/server.yml:{line}:"
            )),
            "{what} at line {line}: {}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("did you mean `debug`?"),
        "{}",
        out.stderr
    );
    for wrong in [
        "include_tasks`?",
        "`template`?",
        "`with_items`?",
        "`register`?",
        "`service`?",
    ] {
        assert!(
            !out.stderr.contains(wrong),
            "suggested {wrong}: {}",
            out.stderr
        );
    }
    let hints = out.stderr.matches("set `runner: ansible`").count();
    assert_eq!(hints, 9, "{}", out.stderr);

    // A play keyword of Ansible's is not a typo of one the runner has.
    svc.file(
        "playbooks/server.yml",
        "- hosts: all\n  serial: 1\n  tasks: []\n",
    );
    svc.test()
        .args(["validate"])
        .status(2)
        .stderr_contains(
            "play keyword `serial` is not in the built-in subset\n  --> playbooks/server.yml:2:3",
        )
        .stderr_lacks("did you mean")
        .run();
}

/// Filters, tests, lookups and module arguments are looked up only when a task runs: each
/// one the built-in runner lacks is an error of `validate` at its file and line — Ansible's
/// own with the `runner: ansible` hint, a typo with the near miss the runner has (#15).
#[test]
fn every_filter_test_lookup_and_argument_outside_the_subset_is_an_error_up_front() {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/server.yaml",
        "kind: Actuator\nmodel: Server\nsync: {playbook: server.yml}\n",
    );
    svc.file(
        "playbooks/server.yml",
        "- hosts: all
  gather_facts: false
  vars: {x: 1}
  tasks:
    - debug: {msg: '{{ x | to_nice_yaml }}'}
    - debug: {msg: '{{ x | defualt(2) }}'}
    - debug: {msg: hi}
      when: x is vault_encrypted
    - debug: {msg: hi}
      failed_when: x is truthyy
    - debug: {msg: \"{{ lookup('csvfile', 'a file=b.csv') }}\"}
    - set_fact:
        y: \"{{ query('pipee', 'date') }}\"
    - template: {src: t.j2, dest: /tmp/t}
    - command: /bin/true
      ignore_errors: '{{ x | bool }}'
      no_log: '{{ x == 1 }}'
    - include_vars: {dir: vars}
    - copy: {dest: /tmp/x, content: a, mdoe: '0644'}
    - copy: {dest: /tmp/x, content: a, backup: true}
    - file: {path: /tmp/d, state: directory, recurse: yes, owner: nobody}
    - template: {src: t.j2, dest: /tmp/t, variable_start_string: '[['}
    - debug: {msg: '{{ x | default(1) | int is number }}'}
",
    );
    svc.file(
        "playbooks/templates/t.j2",
        "fine {{ x | default(1) }}\n{{ x | human_readable }}\n",
    );
    let out = svc.test().args(["validate"]).status(2).run();
    let err = &out.stderr;
    for (place, what, hint) in [
        (
            "server.yml:5:",
            "filter `to_nice_yaml` is not in the built-in subset",
            "runner: ansible",
        ),
        (
            "server.yml:6:",
            "unknown filter `defualt`",
            "did you mean `default`?",
        ),
        (
            "server.yml:7:",
            "test `vault_encrypted` is not in the built-in subset",
            "runner: ansible",
        ),
        ("server.yml:9:", "unknown test `truthyy`", "did you mean"),
        (
            "server.yml:11:",
            "lookup `csvfile` is not in the built-in subset",
            "runner: ansible",
        ),
        (
            "server.yml:12:",
            "unknown lookup `pipee`",
            "did you mean `pipe`?",
        ),
        (
            "server.yml:18:",
            "argument `dir` of module `include_vars` is not in the built-in subset",
            "runner: ansible",
        ),
        (
            "server.yml:19:",
            "unknown argument `mdoe` of module `copy`",
            "did you mean `mode`?",
        ),
        (
            "server.yml:20:",
            "module `copy`: `backup: true` is not in the built-in subset (it accepts `false`)",
            "runner: ansible",
        ),
        (
            "server.yml:21:",
            "module `file`: `recurse: true` is not in the built-in subset (it accepts `false`)",
            "runner: ansible",
        ),
        (
            "server.yml:22:",
            "module `template`: `variable_start_string: [[` is not in the built-in subset (it accepts `{{`)",
            "runner: ansible",
        ),
        (
            "templates/t.j2:2:8",
            "filter `human_readable` is not in the built-in subset",
            "runner: ansible",
        ),
    ] {
        let at = err
            .find(&format!("{what}\n  --> playbooks/{place}"))
            .unwrap_or_else(|| panic!("{what} at {place}: {err}"));
        let next = err[at..]
            .find("hint:")
            .map(|h| &err[at + h..])
            .and_then(|h| h.lines().next())
            .unwrap_or("");
        assert!(next.contains(hint), "{what}: hint {next:?}, wanted {hint}");
    }
    // What the runner has passes: `default`, `int`, `number`, the template's first line.
    assert_eq!(err.matches("error:").count(), 12, "{err}");
}

#[test]
fn a_clean_service_is_valid_and_says_so() {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/server.yaml",
        r#"kind: Actuator
model: Server
attributes:
  server_name: "{{ object.name }}"
  site_addr: "{{ object.site.address }}"
sync:
  playbook: server.yml
  hosts: "{{ site_addr }}"
delete:
  playbook: server.yml
  hosts: "{{ site_addr }}"
  vars: {state: absent}
feedback:
  url: "{{ result.stats.url }}"
  pid: {jsonpath: "$.stats.pid"}
"#,
    );
    svc.file(
        "playbooks/server.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug: {msg: \"{{ server_name }}\"}\n",
    );
    let out = svc.test().args(["validate"]).stderr("").run();
    assert_eq!(out.stdout.trim(), "valid (0 warnings)");
}

#[test]
fn the_shipped_services_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.to_path_buf()];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.join("stepsync.yaml").exists() {
            dirs.push(p);
        }
    }
    assert!(dirs.len() >= 2, "{dirs:?}");
    for d in dirs {
        let mut test = Service::at(&d).test().arg("validate");
        for objs in ["objects", "objects.yaml"] {
            if d.join(objs).exists() {
                test = test.args(["-f", objs]);
            }
        }
        test.stderr_lacks("warning").run();
    }
}

#[test]
fn handlers_must_exist_includes_take_their_keywords_and_load_when_they_run() {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/server.yaml",
        "kind: Actuator\nmodel: Server\nsync:\n  playbook: server.yml\n  hosts: localhost\n",
    );
    svc.file(
        "playbooks/server.yml",
        r#"- hosts: all
  gather_facts: false
  tasks:
    - name: a typo in notify
      debug: {msg: hi}
      notify: restart sever
    - name: a topic someone listens to
      debug: {msg: hi}
      notify: [restarts, "greet : greeted"]
    - name: a missing file that never loads
      include_tasks: never.yml
      when: false
    - name: a block that may not run
      when: maybe | default(false)
      block:
        - include_tasks: never-either.yml
    - name: a missing file that always loads
      include_tasks: always.yml
    - name: a keyword Ansible refuses on an include
      include_tasks: never.yml
      become: true
      when: false
    - name: an argument the runner would drop
      import_role: {name: greet, rolespec_validate: false}
    - name: a tasks file the role lacks
      import_role: {name: greet, tasks_from: missing}
    - name: a tasks file of the role, checked like main.yml
      include_role: {name: greet, tasks_from: other}
  roles: [greet]
  handlers:
    - name: restart server
      debug: {msg: restarted}
      listen: restarts
"#,
    );
    svc.file(
        "playbooks/roles/greet/tasks/main.yml",
        "- debug: {msg: hi}\n  notify: greeted\n",
    );
    svc.file(
        "playbooks/roles/greet/tasks/other.yml",
        "- debug: {msg: '{{ 1 | nope_filter }}'}\n",
    );
    svc.file(
        "playbooks/roles/greet/handlers/main.yml",
        "- name: greeted\n  debug: {msg: greeted}\n",
    );
    let out = svc.expect(&["validate"], 2);
    let err = &out.stderr;
    assert!(
        err.contains("notify: no handler is named `restart sever`"),
        "{err}"
    );
    assert!(err.contains("playbooks/server.yml:4:"), "{err}");
    assert!(err.contains("did you mean `restart server`?"), "{err}");
    assert!(err.contains("always.yml does not exist"), "{err}");
    assert!(!err.contains("never.yml does not exist"), "{err}");
    assert!(!err.contains("never-either.yml"), "{err}");
    assert!(!err.contains("`restarts`"), "{err}");
    assert!(!err.contains("`greeted`"), "{err}");
    assert!(
        err.contains("`become` is not a valid keyword of include_tasks"),
        "{err}"
    );
    assert!(err.contains("playbooks/server.yml:21:"), "{err}");
    assert!(
        err.contains("`rolespec_validate` of import_role is not in the built-in subset"),
        "{err}"
    );
    assert!(
        err.contains("tasks_from: role `greet` has no tasks file `missing`"),
        "{err}"
    );
    assert!(
        err.contains(
            "unknown filter `nope_filter`\n  --> playbooks/roles/greet/tasks/other.yml:1:"
        ),
        "{err}"
    );
    assert!(
        out.stdout.starts_with("invalid: 6 errors"),
        "{}",
        out.stdout
    );
}

/// Watchers' payloads and policies' actions are checked as actuators' templates are.
#[test]
fn watcher_and_policy_templates_are_checked_with_their_places() {
    let svc = Service::empty();
    svc.file("stepsync.yaml", "name: steps\n");
    svc.file(
        "schemas/m.yaml",
        "models:\n  Network:\n    fields:\n      name: string\n      ports: {type: list, default: []}\n  \
         Port:\n    fields:\n      name: string\n      network: {type: ref, to: Network}\n      \
         number: int\n      note: string\n",
    );
    svc.file(
        "stepdefs/policy.yaml",
        "kind: Policy\nmodel: Network\non_create:\n  - ensure:\n      model: Port\n      \
         loop: \"{{ object.prots }}\"\n      key: \"{{ object.name }}-{{ itme }}\"\n      \
         fields: {network: \"{{ object.name }}\", number: \"{{ item }}\"}\n",
    );
    svc.file(
        "stepdefs/watcher.yaml",
        "kind: Watcher\nmodel: Port\nwatches:\n  - {model: Network, via: network}\non_change:\n  \
         rest: {method: POST, url: \"http://127.0.0.1:1/{{ watched.key }}/{{ wached }}\"}\n",
    );
    let out = svc.expect(&["validate"], 2);
    let err = &out.stderr;
    for (what, place) in [
        ("Network has no field `prots`", "stepdefs/policy.yaml:6:"),
        (
            "`itme` is not defined in a policy",
            "stepdefs/policy.yaml:7:",
        ),
        (
            "`wached` is not defined in the watcher's payload",
            "stepdefs/watcher.yaml:6:",
        ),
    ] {
        assert!(err.contains(what), "missing `{what}` in:\n{err}");
        assert!(err.contains(place), "missing `{place}` in:\n{err}");
    }
    assert!(err.contains("did you mean `item`?"), "{err}");
    assert!(!err.contains("`item` is not defined"), "{err}");
    assert!(!err.contains("`watched` is not defined"), "{err}");
}

//! The names real Ansible (ansible-core 2.19) knows: its play and task keywords and the
//! modules of `ansible.builtin`. A name the built-in runner does not support but Ansible does
//! is outside the subset — reported as such, with the `runner: ansible` hint, and never
//! "corrected" into a different real name (`include_vars` is not a typo of `include_tasks`).

use std::collections::HashMap;
use std::sync::LazyLock;

/// Task keywords of ansible-core (`with_<lookup>` aside).
const TASK_KEYWORDS: &[&str] = &[
    "action",
    "any_errors_fatal",
    "args",
    "async",
    "become",
    "become_exe",
    "become_flags",
    "become_method",
    "become_user",
    "changed_when",
    "check_mode",
    "collections",
    "connection",
    "debugger",
    "delay",
    "delegate_facts",
    "delegate_to",
    "diff",
    "environment",
    "failed_when",
    "ignore_errors",
    "ignore_unreachable",
    "listen",
    "local_action",
    "loop",
    "loop_control",
    "module_defaults",
    "name",
    "no_log",
    "notify",
    "poll",
    "port",
    "register",
    "remote_user",
    "retries",
    "run_once",
    "tags",
    "throttle",
    "timeout",
    "until",
    "vars",
    "when",
];

/// Play keywords of ansible-core.
const PLAY_KEYWORDS: &[&str] = &[
    "any_errors_fatal",
    "become",
    "become_exe",
    "become_flags",
    "become_method",
    "become_user",
    "check_mode",
    "collections",
    "connection",
    "debugger",
    "diff",
    "environment",
    "fact_path",
    "force_handlers",
    "gather_facts",
    "gather_subset",
    "gather_timeout",
    "handlers",
    "hosts",
    "ignore_errors",
    "ignore_unreachable",
    "max_fail_percentage",
    "module_defaults",
    "name",
    "no_log",
    "order",
    "port",
    "post_tasks",
    "pre_tasks",
    "remote_user",
    "roles",
    "run_once",
    "serial",
    "strategy",
    "tags",
    "tasks",
    "throttle",
    "timeout",
    "vars",
    "vars_files",
    "vars_prompt",
];

/// The modules of `ansible.builtin` in ansible-core.
const BUILTIN_MODULES: &[&str] = &[
    "add_host",
    "apt",
    "apt_key",
    "apt_repository",
    "assemble",
    "assert",
    "async_status",
    "blockinfile",
    "command",
    "copy",
    "cron",
    "deb822_repository",
    "debconf",
    "debug",
    "dnf",
    "dnf5",
    "dpkg_selections",
    "expect",
    "fail",
    "fetch",
    "file",
    "find",
    "gather_facts",
    "get_url",
    "getent",
    "git",
    "group",
    "group_by",
    "hostname",
    "import_playbook",
    "import_role",
    "import_tasks",
    "include_role",
    "include_tasks",
    "include_vars",
    "iptables",
    "known_hosts",
    "lineinfile",
    "meta",
    "mount_facts",
    "package",
    "package_facts",
    "pause",
    "ping",
    "pip",
    "raw",
    "reboot",
    "replace",
    "rpm_key",
    "script",
    "service",
    "service_facts",
    "set_fact",
    "set_stats",
    "setup",
    "shell",
    "slurp",
    "stat",
    "subversion",
    "systemd",
    "systemd_service",
    "sysvinit",
    "tempfile",
    "template",
    "unarchive",
    "uri",
    "user",
    "validate_argument_spec",
    "wait_for",
    "wait_for_connection",
    "yum_repository",
];

/// What a name is to Ansible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Keyword,
    /// `with_<lookup>`: a loop over a lookup plugin.
    LoopKeyword,
    Module,
}

/// What `name`, found where a task keyword or module goes, is to Ansible, if anything. A
/// dotted name (`community.general.x`, `ansible.builtin.x`) is a module of a collection.
pub fn task_name(name: &str) -> Option<Known> {
    if TASK_KEYWORDS.contains(&name) {
        Some(Known::Keyword)
    } else if name.starts_with("with_") && name.len() > 5 {
        Some(Known::LoopKeyword)
    } else if BUILTIN_MODULES.contains(&name.strip_prefix("ansible.builtin.").unwrap_or(name))
        || name.split('.').count() >= 3
    {
        Some(Known::Module)
    } else {
        None
    }
}

/// Whether `name` is a play keyword of Ansible.
pub fn is_play_keyword(name: &str) -> bool {
    PLAY_KEYWORDS.contains(&name)
}

/// The filters, tests, lookups and module arguments of ansible-core, as
/// scripts/gen-ansible-names.py read them off the ansible-core that scripts/test.sh installs.
struct Core {
    filters: Vec<&'static str>,
    tests: Vec<&'static str>,
    lookups: Vec<&'static str>,
    module_args: HashMap<&'static str, Vec<&'static str>>,
}

static CORE: LazyLock<Core> = LazyLock::new(|| {
    let mut core = Core {
        filters: Vec::new(),
        tests: Vec::new(),
        lookups: Vec::new(),
        module_args: HashMap::new(),
    };
    for line in include_str!("ansible_core.txt").lines() {
        let Some((kind, names)) = line.split_once(": ") else {
            continue;
        };
        let names: Vec<&str> = names.split_whitespace().collect();
        match kind {
            "filters" => core.filters = names,
            "tests" => core.tests = names,
            "lookups" => core.lookups = names,
            _ => {
                if let Some(module) = kind.strip_prefix("module ") {
                    core.module_args.insert(module, names);
                }
            }
        }
    }
    core
});

/// What a name used in a template is to Ansible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Filter,
    Test,
    Lookup,
}

impl Plugin {
    pub fn as_str(self) -> &'static str {
        match self {
            Plugin::Filter => "filter",
            Plugin::Test => "test",
            Plugin::Lookup => "lookup",
        }
    }
}

/// Whether ansible-core (or Jinja2, for filters and tests) has a plugin of that kind and name.
pub fn is_plugin(kind: Plugin, name: &str) -> bool {
    plugins(kind).contains(&name.strip_prefix("ansible.builtin.").unwrap_or(name))
}

/// Every plugin of that kind ansible-core has.
pub fn plugins(kind: Plugin) -> &'static [&'static str] {
    match kind {
        Plugin::Filter => &CORE.filters,
        Plugin::Test => &CORE.tests,
        Plugin::Lookup => &CORE.lookups,
    }
}

/// Whether `arg` is an argument (or an alias of one) of the `ansible.builtin` module `module`.
pub fn is_module_arg(module: &str, arg: &str) -> bool {
    CORE.module_args
        .get(module.strip_prefix("ansible.builtin.").unwrap_or(module))
        .is_some_and(|args| args.contains(&arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_names_are_known_for_what_they_are() {
        assert_eq!(task_name("check_mode"), Some(Known::Keyword));
        assert_eq!(task_name("until"), Some(Known::Keyword));
        assert_eq!(task_name("with_dict"), Some(Known::LoopKeyword));
        assert_eq!(task_name("include_vars"), Some(Known::Module));
        assert_eq!(task_name("ansible.builtin.tempfile"), Some(Known::Module));
        assert_eq!(task_name("community.general.ufw"), Some(Known::Module));
        assert_eq!(task_name("whenn"), None);
        assert!(is_play_keyword("serial"));
        assert!(!is_play_keyword("hostss"));
        assert!(is_plugin(Plugin::Filter, "to_nice_yaml"));
        assert!(is_plugin(Plugin::Filter, "selectattr"), "Jinja2's own");
        assert!(is_plugin(Plugin::Test, "version"));
        assert!(is_plugin(Plugin::Lookup, "ansible.builtin.pipe"));
        assert!(!is_plugin(Plugin::Lookup, "pipee"));
        assert!(is_module_arg("copy", "local_follow"));
        assert!(is_module_arg("file", "dest"), "an alias");
        assert!(!is_module_arg("copy", "mdoe"));
    }
}

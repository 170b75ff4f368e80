//! The built-in playbook runner (SPEC §7): a typed loader for plays, roles and tasks that
//! keeps file:line for every task, and a native executor for a subset of Ansible's modules
//! and keywords. `runner: ansible` delegates everything else to `ansible-playbook`.

pub mod ansible_names;
pub mod inputs;
pub mod load;
pub mod lookup;
pub mod modules;
pub mod run;
pub mod ssh;
pub mod target;
pub mod vars;
pub mod vars_file;

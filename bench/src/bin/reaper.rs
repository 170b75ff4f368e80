//! reaper CMD [ARGS...]: runs CMD as a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`) and
//! reaps every orphan that lands on it at once, the way a real host's init does.
//!
//! Why: B2 runs the test sshd under it. The hello servers daemonize (double fork), so they
//! are re-parented; a stopped server must then be reaped before `hello_server.py stop` sees it
//! gone. In this container PID 1 reaps orphans only about once a second, which would add a
//! second or more to every restart and stop (the first sync's handler restarts each server)
//! and to every variant alike. SIGTERM/SIGINT/SIGHUP are passed on to CMD; the reaper exits
//! with CMD's status once CMD has exited.

use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("usage: reaper CMD [ARGS...]");
        std::process::exit(2);
    };
    // SAFETY: plain prctl and signal calls with valid arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            eprintln!("reaper: prctl(PR_SET_CHILD_SUBREAPER) failed");
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, forward as *const () as libc::sighandler_t);
        }
    }
    let child = match std::process::Command::new(&cmd).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reaper: {}: {e}", cmd.to_string_lossy());
            std::process::exit(127);
        }
    };
    let main_pid = child.id() as i32;
    CHILD.store(main_pid, Ordering::SeqCst);
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == main_pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            std::process::exit(code);
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            std::process::exit(0);
        }
    }
}
